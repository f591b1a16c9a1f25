"""`unet-jax bench`: JAX vs torch eager (and torch.compile) speed, side by side
(`unet_jax.parity.bench`, which imports torch when it runs)."""

from unet_jax.parity import bench
from unet_jax.parity.bench import DEFAULT_XLA_FLAGS


def add_flags(parser) -> None:
    parser.add_argument("--archs", nargs="*", help="default: all")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="nearest valid size is used")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--xla-flags", default=DEFAULT_XLA_FLAGS)
    parser.add_argument("--peak-tflops", type=float,
                        help="device peak for model FLOP utilisation (default: known GPUs' "
                             "dense tensor-core peak for the dtype)")
    parser.add_argument("--json", help="write the rows as JSON to this file")
    parser.add_argument("--predict", action="store_true",
                        help="prediction throughput instead (unet_jax/parity/bench_predict.py): the first "
                             "of --archs (default vgg16_unet)")
    parser.add_argument("--photos", type=int, default=8, help="--predict: 500x375 photos")
    parser.add_argument("--tile", type=int, default=1024, help="--predict: sliding-window tile")


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="JAX vs torch eager speed, side by side")
    add_flags(b)
    b.set_defaults(fn=bench.main)
