"""`unet-jax` command line: list, convert, parity, export, train, data, predict, evaluate,
bench, demo.

Commands that compare against torch (`parity`, `convert` verification, `demo`) import the
torch references from the `parity` package lazily; the rest never import torch.
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

import numpy as np

from unet_jax import compile_cache, compile_notice
from unet_jax.kernels.cpu import host_memory


def parse_value(text: str):
    """`--set` values: JSON literals (3, 0.5, true) or, failing that, the plain string."""
    lowered = {"true": "true", "false": "false"}.get(text.lower(), text)
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        return text


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key] = parse_value(value)
    return out


def parse_size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    try:
        return (int(h), int(w)) if sep else (int(h), int(h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW or N, got {text!r}") from None


def cmd_list(args) -> int:
    from unet_jax import registry
    for arch in registry.all_archs():
        opts = ", ".join(f"{k}={v!r}" for k, v in arch.defaults.items())
        print(f"{arch.name:<14} {arch.source}\n{'':<14} options: {opts}")
    return 0


def _parity_report(state, model, size, batch, dtype):
    from parity import harness
    size = size or harness.default_size(_arch_name(model))
    return harness.check_state_dict(state, model, size, batch, dtype)


def _arch_name(model) -> str:
    from unet_jax import registry
    return registry.arch_of_config(model.config).name


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def cmd_convert(args) -> int:
    import unet_jax
    from unet_jax.convert.api import load_torch_with_report
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; nothing written")
    model, report, state = load_torch_with_report(args.checkpoint, args.arch, **parse_sets(args.set))
    n_params = sum(int(np.prod(v.shape)) for v in _param_leaves(model))
    print(f"arch:    {_arch_name(model)}\nconfig:  {model.config}\nparams:  {n_params:,}")
    _print_report(report)
    if args.verify and _torch_available():
        result = _parity_report(state, model, args.size, 1, "float32")
        print(result.format())
        if not result.ok:
            print("error: parity check failed; nothing written", file=sys.stderr)
            return 1
    elif args.verify:
        print("parity: skipped (torch is not installed)")
    from unet_jax import presets
    presets.record(model, args.preprocess or presets.recorded(model))
    unet_jax.save(model, out)
    print(f"saved:   {out} (preprocess {presets.recorded(model)})")
    return 0


def _print_report(report: dict) -> None:
    """How the file was read and what of it was used, as `convert` and `parity` print it."""
    for note in report["notes"]:
        print(f"read:    {note}")
    print(f"keys:    {len(report['mapped'])} mapped, {len(report['ignored'])} ignored"
          + (f", {len(report['defaulted'])} absent and defaulted (num_batches_tracked)"
             if report["defaulted"] else ""))
    for entry in report["ignored"][:12]:
        print(f"ignored: {entry}")
    if len(report["ignored"]) > 12:
        print(f"ignored: ... and {len(report['ignored']) - 12} more")


def _param_leaves(model):
    import jax
    from flax import nnx
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def cmd_parity(args) -> int:
    import jax
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from unet_jax.sources import open_model
    model, report, state = open_model(args.checkpoint, args.arch, which=args.which,
                                      dtype=args.dtype, **parse_sets(args.set))
    if not args.json:
        _print_report(report)
    result = _parity_report(state, model, args.size, args.batch, args.dtype)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format(args.layers))
    return 0 if result.ok else 1


def cmd_export(args) -> int:
    import unet_jax
    from unet_jax.convert.io import write_state_dict
    from unet_jax.saving import ModelSourceError, load_with_info, source_kind
    takes = "export takes a saved model, a training workdir or an smp save_pretrained folder"
    try:
        kind = source_kind(args.model)
    except ModelSourceError as e:
        raise ModelSourceError(f"{e}; {takes}") from None
    if kind == "torch":
        raise ModelSourceError(
            f"{args.model} is a torch checkpoint file; {takes}. Convert it first: unet-jax "
            f"convert {args.model} -o MODEL_DIR, then unet-jax export MODEL_DIR -o {args.output}")
    model, info = load_with_info(args.model, which=args.which)
    state = unet_jax.to_torch_state_dict(model)
    if Path(args.output).suffix:
        path = write_state_dict(state, args.output)
    else:  # a folder: smp's save_pretrained layout
        from unet_jax.convert.smp_hub import save_pretrained
        path = save_pretrained(model, args.output)
    print(f"read {info}\nwrote {path} ({_arch_name(model)}, {len(state)} keys)")
    return 0


def cmd_demo(args) -> int:
    """The end-to-end demo: parity of every arch, then a seeded torch checkpoint -> convert
    -> parity -> train on synthetic data on all local devices -> save -> export to torch
    -> torch reproduces the JAX predictions."""
    import jax
    import torch

    import unet_jax
    from parity import harness
    from unet_jax import registry, train
    workdir = Path(args.workdir)
    for n in range(2, 1000):  # a fresh directory for every run: runs/demo, runs/demo-2, ...
        if not (workdir.exists() and any(workdir.iterdir())):
            break
        workdir = Path(f"{args.workdir}-{n}")
    workdir.mkdir(parents=True, exist_ok=True)

    print("== 1. parity: a seeded torch checkpoint of every arch at upstream widths")
    failures = 0
    for arch in registry.list_models():
        reference = harness.random_reference(registry.make_config(arch), seed=args.seed)
        state = {k: v.numpy() for k, v in reference.state_dict().items()}
        size = (188, 188) if arch == "semseg_unet" else (64, 64)
        result = harness.check_state_dict(state, unet_jax.load_torch(state), size)
        worst = max(d.max_rel for d in result.outputs)
        print(f"  {arch:<14} {len(result.layers):>3} layers, output max rel diff {worst:.1e} "
              f"{'PASS' if result.ok else 'FAIL'}")
        failures += not result.ok

    print("\n== 2. torch checkpoint -> convert -> parity")
    config = registry.make_config("imgseg_unet", output_ch=args.classes, base_width=16)
    reference = harness.random_reference(config, seed=args.seed)
    checkpoint = workdir / "torch_init.pth"
    torch.save(reference.state_dict(), checkpoint)
    model = unet_jax.load_torch(checkpoint)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    result = harness.check_state_dict(state, model, (args.size, args.size))
    print(f"  {checkpoint}: {model.config}\n  " + result.format().replace("\n", "\n  "))
    failures += not result.ok

    print(f"\n== 3. train from it on synthetic shapes on {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s)")
    cfg = train.TrainConfig(arch="imgseg_unet", model={"base_width": 16},
                            num_classes=args.classes, init_from=str(checkpoint),
                            image_size=args.size, epochs=args.epochs, lr=3e-3, warmup_epochs=0.5,
                            batch_size=16, seed=args.seed, workdir=str(workdir / "train"))
    summary = train.train(cfg)
    chance = 1.0 / args.classes
    print(f"  final val mIoU {summary['miou']:.3f} (pixel acc {summary['pixel_acc']:.3f}); "
          f"a constant prediction scores about {chance:.2f}")
    failures += summary["miou"] < 0.5

    print("\n== 4. save -> export to torch -> torch reproduces the JAX predictions")
    trained = summary["model"]
    trained.eval()
    saved = unet_jax.save(trained, workdir / "model")
    reloaded = unet_jax.load(saved)
    from unet_jax.convert.io import write_state_dict
    exported = write_state_dict(unet_jax.to_torch_state_dict(reloaded), workdir / "exported.pth")
    back = harness.reference_for(reloaded.config)
    back.load_state_dict(torch.load(exported, weights_only=True), strict=True)
    val = train.make_datasets(cfg)[1]
    from unet_jax import presets  # uint8 images, normalised as the model was trained
    preset = presets.get(presets.recorded(reloaded))
    images = np.asarray(preset.normalize(np.stack([val[i][0] for i in range(8)])))
    torch_logits = harness.torch_forward(back.eval(), images)[0]
    jax_logits = np.asarray(reloaded(images))
    check = harness.diff("predictions", torch_logits, jax_logits, argmax=True)
    print(f"  saved {saved}, exported {exported}\n  torch vs JAX on 8 validation images: max rel "
          f"diff {check.max_rel:.1e}, argmax agreement {check.argmax_agreement:.2f}%")
    failures += check.max_rel > harness.TOLERANCE["float32"]
    print(f"\npictures: {workdir / 'train' / 'curves.png'}, {workdir / 'train' / 'predictions.png'}")
    print("demo " + ("PASSED" if not failures else f"FAILED ({failures} checks)"))
    return 1 if failures else 0


def cmd_train(args) -> int:
    from unet_jax import train
    cfg = train.config_from_args(args, parse_value)
    summary = train.train(cfg)
    if summary.get("interrupted"):
        return 0
    if summary.get("miou") is not None:
        print(f"done: val mIoU {summary['miou']:.3f}; outputs in {cfg.workdir}")
    return 0


def _peek_arch(argv: list[str] | None) -> str:
    """The value of `--arch` in `argv`, so `train --arch A --help` shows A's defaults."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--arch" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--arch="):
            return arg.partition("=")[2]
    return ""


class Parser(argparse.ArgumentParser):
    """argparse whose "invalid choice" errors (commands, choice flags) add "did you mean"."""

    def error(self, message: str):
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if match:
            choices = re.findall(r"'([^']*)'", match[2])
            message += did_you_mean(match[1], choices)
        super().error(message)


def did_you_mean(given: str, candidates: list[str], prefix: str = "") -> str:
    """"; did you mean PREFIX+X?" for the candidate X closest to `given`, or ""."""
    close = difflib.get_close_matches(given, candidates, n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line parsed; a flag the command does not have gets that command's usage
    and "did you mean" (exit 2)."""
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = parser.commands[args.command]
        flags = [f[2:] for f in command._option_string_actions if f.startswith("--")]
        hint = next((h for h in (did_you_mean(a.partition("=")[0].lstrip("-"), flags, "--")
                                 for a in extra if a.startswith("-")) if h), "")
        command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    p = Parser(prog="unet-jax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    p.commands = sub.choices  # name -> the command's parser

    sub.add_parser("list", help="the archs, their options and sources").set_defaults(fn=cmd_list)

    c = sub.add_parser("convert", help="torch checkpoint -> verified, saved JAX model")
    c.add_argument("checkpoint")
    c.add_argument("--arch", help="skip arch inference")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="config option override")
    c.add_argument("-o", "--output", required=True, help="new directory for the saved model")
    c.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the parity check against the torch reference")
    c.add_argument("--size", type=parse_size, help="parity input HxW (default: near 256)")
    c.add_argument("--preprocess", default="", help="record this input preset instead of the "
                   "upstream's (unet-jax predict --help lists them)")
    c.set_defaults(fn=cmd_convert)

    q = sub.add_parser("parity", help="prove a checkpoint converts exactly")
    q.add_argument("checkpoint", help="torch file, saved model, training workdir or smp "
                                      "save_pretrained folder")
    q.add_argument("--which", choices=("best", "latest"), default="best",
                   help="of a training workdir: the best (val mIoU) or latest checkpoint")
    q.add_argument("--arch")
    q.add_argument("--set", action="append", metavar="KEY=VALUE")
    q.add_argument("--size", type=parse_size, help="input HxW (default: near 256)")
    q.add_argument("--batch", type=int, default=1)
    q.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    q.add_argument("--layers", action="store_true", help="print every layer's difference")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.set_defaults(fn=cmd_parity)

    e = sub.add_parser("export", help="saved model or training workdir -> torch .pth / .safetensors")
    e.add_argument("model", help="saved model, training workdir or smp save_pretrained folder")
    e.add_argument("--which", choices=("best", "latest"), default="best",
                   help="of a training workdir: the best (val mIoU) or latest checkpoint")
    e.add_argument("-o", "--output", required=True,
                   help=".pth / .pt (torch.save), .safetensors, or (smp archs) a new folder "
                        "in smp's save_pretrained layout (config.json + model.safetensors)")
    e.set_defaults(fn=cmd_export)

    t = sub.add_parser("train", help="train or fine-tune on all local devices")
    from unet_jax.train import add_flags
    add_flags(t, arch=_peek_arch(argv))
    t.set_defaults(fn=cmd_train)

    from unet_jax.commands import add_parsers
    add_parsers(sub)

    b = sub.add_parser("bench", help="JAX vs torch eager speed, side by side")
    from unet_jax.bench import add_flags as add_bench_flags
    add_bench_flags(b)
    b.set_defaults(fn=lambda args: __import__("unet_jax.bench").bench.main(args))

    d = sub.add_parser("demo", help="the end-to-end demo on embedded defaults")
    d.add_argument("--workdir", default="runs/demo",
                   help="outputs go here, or to WORKDIR-2, -3, ... if it is not empty")
    d.add_argument("--epochs", type=int, default=6)
    d.add_argument("--classes", type=int, default=4)
    d.add_argument("--size", type=int, default=64, help="image size (a multiple of 16)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command != "bench":  # the bench sets its own (scripts/bench.py skips the CLI)
        host_memory.keep_freed_memory()  # before JAX starts its threads
        compile_cache.enable()
    from unet_jax import data
    from unet_jax.convert.engine import ConversionError
    from unet_jax.convert.io import CheckpointError
    from unet_jax.train import NonFiniteLossError
    # for this command (main may run in-process): messages name flags, compilations announced
    before = data.COMMAND_LINE, compile_notice.ENABLED
    data.COMMAND_LINE, compile_notice.ENABLED = True, args.command != "bench"
    try:
        return args.fn(args)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ConversionError, CheckpointError, OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        data.COMMAND_LINE, compile_notice.ENABLED = before


if __name__ == "__main__":
    sys.exit(main())
