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
    print("| conv (input, kernel, dtype, stride, padding) | forward: measured (policy) | "
          "forward + gradients: measured (policy) |")
    print("|---|---|---|")
    total = {"measured": [0.0, 0.0], "policy": [0.0, 0.0]}
    for key, entry, policy in cpu_tuning.tune(args.arch, args.size, args.batch, args.dtype,
                                              **parse_sets(args.model)):
        times = entry["times"]
        cells = []
        for mode, (chosen, by_policy) in enumerate(zip((entry["infer"], entry["train"]), policy)):
            total["measured"][mode] += times[chosen][mode]
            total["policy"][mode] += times[by_policy][mode]
            cells.append(f"{chosen} {1e3 * times[chosen][mode]:.2f} ms ({by_policy} "
                         f"{1e3 * times[by_policy][mode]:.2f} ms)")
        print(f"| {key.removeprefix('conv2d ')} | {cells[0]} | {cells[1]} |")
    m, p = total["measured"], total["policy"]
    print(f"sum over shapes: forward {1e3 * m[0]:.1f} ms (policy {1e3 * p[0]:.1f}), "
          f"forward + gradients {1e3 * m[1]:.1f} ms (policy {1e3 * p[1]:.1f}); recorded for this CPU")
    return 0
