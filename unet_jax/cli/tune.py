"""`unet-jax tune`: measure an arch's CPU convolution algorithms on this machine ahead of the
first run (`unet_jax.train.cpu_tuning`); later runs on this CPU use the fastest measured."""

from unet_jax import registry
from unet_jax.cli.parsing import parse_sets
from unet_jax.kernels.cpu import tuning
from unet_jax.train import cpu_tuning


def add_parser(sub) -> None:
    t = sub.add_parser("tune", help="measure an arch's CPU convolution algorithms on this machine")
    t.add_argument("--arch", required=True, choices=registry.list_models())
    t.add_argument("--size", type=int, default=256, help="input size (the arch's nearest valid size)")
    t.add_argument("--batch", type=int, default=2)
    t.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    t.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                   help="arch option, repeatable (e.g. --model base_width=16)")
    t.set_defaults(fn=run)


def run(args) -> int:
    if tuning.tuning_file() is None:
        raise ValueError(f"${tuning.ENV_FILE} is empty: there is no tuning file to record in")
    print(f"cpu:     {tuning.cpu_key()}")
    print(f"file:    {tuning.tuning_file()}")
    print("| conv (input, kernel, dtype, stride, padding) | forward alone: fastest (policy's) | "
          "forward + gradients alone: fastest (policy's) |")
    print("|---|---|---|")
    result = cpu_tuning.tune(args.arch, args.size, args.batch, args.dtype, **parse_sets(args.model))
    for key, entry, policy in result["shapes"]:
        times = entry["times"]
        pairs = zip((entry["infer"], entry["train"]), policy)
        cells = [f"{a} {1e3 * times[a][mode]:.2f} ms ({b} {1e3 * times[b][mode]:.2f} ms)"
                 for mode, (a, b) in enumerate(pairs)]
        print(f"| {key.removeprefix('conv2d ')} | {cells[0]} | {cells[1]} |")
    for mode, label in (("infer", "forward"), ("train", "forward + gradients")):
        times = result["network"][mode]
        print(f"whole network, {label}: measured choices {1e3 * times['measured']:.1f} ms, policy's "
              f"{1e3 * times['policy']:.1f} ms: kept the {result['kept'][mode]}'s")
    print("recorded for this CPU")
    return 0
