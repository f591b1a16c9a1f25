"""`unet-jax list`, `convert`, `parity`, `export`: model files in and out, checked against
the torch references (`unet_jax.parity`, imported only when a check runs: torch is optional)."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import unet_jax
from unet_jax import registry
from unet_jax.checkpoints.saved import ModelSourceError
from unet_jax.checkpoints.sources import load_with_info, open_model, source_kind
from unet_jax.cli.parsing import parse_sets, parse_size
from unet_jax.convert.api import load_nnunet, load_torch_with_report
from unet_jax.convert.io import write_state_dict
from unet_jax.convert.model_folders import is_nnunet_folder
from unet_jax.convert.smp_hub import save_pretrained
from unet_jax.models import recorded


def cmd_list(args) -> int:
    print("native (hand-written modules, built by name):")
    for arch in registry.all_archs():
        opts = ", ".join(f"{k}={v!r}" for k, v in arch.defaults.items())
        print(f"  {arch.name:<14} {arch.source}\n  {'':<14} options: {opts}")
    print("imported (any other torch network, through torch.export): smp save_pretrained folders "
          "of every architecture / encoder and nnU-Net model folders (`unet-jax convert FOLDER "
          "OUT`), any torch.nn.Module through unet_jax.import_torch(module, example)")
    return 0


def _parity_report(state, model, size, batch, dtype):
    from unet_jax.parity import harness
    size = size or harness.default_size(_arch_name(model))
    return harness.check_state_dict(state, model, size, batch, dtype)


def _arch_name(model) -> str:
    return registry.arch_of_config(model.config).name


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _convert_nnunet(folder: Path, out: Path) -> int:
    """One saved model per fold, OUT/fold_N."""
    models = load_nnunet(folder)
    for fold, model in models.items():
        origin = json.loads(model.config.origin)
        unet_jax.save(model, out / fold)
        print(f"{fold}: {origin['configuration']} ({model.config.num_classes} classes, mirroring axes "
              f"{origin['inference_allowed_mirroring_axes']}) -> {out / fold}")
    return 0


def cmd_convert(args) -> int:
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; nothing written")
    if is_nnunet_folder(Path(args.checkpoint)):
        return _convert_nnunet(Path(args.checkpoint), out)
    model, report, state = load_torch_with_report(args.checkpoint, args.arch, **parse_sets(args.set))
    n_params = sum(int(np.prod(v.shape)) for v in _param_leaves(model))
    print(f"arch:    {_arch_name(model)}\nconfig:  {model.config}\nparams:  {n_params:,}")
    _print_report(report)
    if args.verify and _arch_name(model) == "imported":
        print("parity: skipped for an imported network (its op table is checked against torch "
              "by the test suite)")
    elif args.verify and _torch_available():
        result = _parity_report(state, model, args.size, 1, "float32")
        print(result.format())
        if not result.ok:
            print("error: parity check failed; nothing written", file=sys.stderr)
            return 1
    elif args.verify:
        print("parity: skipped (torch is not installed)")
    recorded.record(model, args.preprocess or recorded.preset_of(model))
    unet_jax.save(model, out)
    print(f"saved:   {out} (preprocess {recorded.preset_of(model)})")
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
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def cmd_parity(args) -> int:
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    model, report, state = open_model(args.checkpoint, args.arch, which=args.which,
                                      dtype=args.dtype, **parse_sets(args.set))
    if not args.json:
        _print_report(report)
    result = _parity_report(state, model, args.size, args.batch, args.dtype)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format(args.layers))
    return 0 if result.ok else 1


def cmd_export(args) -> int:
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
        path = save_pretrained(model, args.output)
    print(f"read {info}\nwrote {path} ({_arch_name(model)}, {len(state)} keys)")
    return 0


def add_parsers(sub) -> None:
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
