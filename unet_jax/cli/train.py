"""`unet-jax train`: one flag per `TrainConfig` field, built from the field comments."""

import argparse
import dataclasses
import json

from unet_jax import registry
from unet_jax.cli.parsing import parse_value, peek_arch
from unet_jax.train import train
from unet_jax.train.config import DEFAULT_ARCH, DEFAULT_CLASSES, TrainConfig, field_comments


def add_flags(parser, arch: str = "") -> None:
    """One flag per TrainConfig field (`--batch-size 32`, `--remat/--no-remat`,
    `--model base_width=16`), plus `--set field=value`. The help shows the arch-dependent
    defaults of `arch` (or of the default arch)."""
    comments = field_comments()
    name = arch if arch in registry.list_models() else DEFAULT_ARCH
    resolved = {"arch": f"{DEFAULT_ARCH} unless --init-from names another",
                "num_classes": f"{DEFAULT_CLASSES} unless --init-from has another count",
                **{k: f"{v!r} for {name}" for k, v in registry.train_defaults(name).items()}}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "given":  # filled from the flags themselves
            continue
        flag, default = "--" + f.name.replace("_", "-"), TrainConfig.__dataclass_fields__[f.name]
        value = default.default if default.default is not dataclasses.MISSING else default.default_factory()
        shown = resolved.get(f.name, repr(value))
        help_ = f"{comments.get(f.name, '')} (default: {shown})"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(value, dict):
            help_ = (f"{comments.get(f.name, '')}: KEY=VALUE (repeatable) or a JSON object, e.g. "
                     f"{flag} base_width=16 or {flag} '{{\"base_width\": 16}}' (default: {shown})")
            parser.add_argument(flag, action="append", metavar="KEY=VALUE", help=help_)
        elif isinstance(value, tuple):
            parser.add_argument(flag, type=float, nargs="*", help=help_)
        else:
            parser.add_argument(flag, type=type(value), help=help_)
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="set any field, e.g. --set lr=0.01")


def model_options(given: list[str], parse_value) -> dict:
    """`--model` values, merged in order: KEY=VALUE pairs and JSON objects."""
    options = {}
    for item in given:
        if item.lstrip().startswith("{"):
            try:
                value = json.loads(item)
            except json.JSONDecodeError as e:
                raise ValueError(f"--model {item}: not valid JSON ({e})") from None
            if not isinstance(value, dict):
                raise ValueError(f"--model {item}: a JSON object of options, not a "
                                 f"{type(value).__name__}")
            options.update(value)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model expects KEY=VALUE (e.g. base_width=16) or a JSON object "
                             f"(e.g. '{{\"base_width\": 16}}'), got {item!r}")
        options[key.strip()] = parse_value(value)
    return options


def config_from_args(args, parse_value) -> TrainConfig:
    values = {}
    for f in dataclasses.fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is None:
            continue
        if f.name == "model":
            given = model_options(given, parse_value)
        values[f.name] = tuple(given) if f.name == "head_weights" else given
    for pair in args.set:
        key, _, value = pair.partition("=")
        if key not in TrainConfig.__dataclass_fields__:
            raise ValueError(f"--set {key}: no such field; fields: "
                             f"{', '.join(TrainConfig.__dataclass_fields__)}")
        values[key] = parse_value(value)
    return TrainConfig(**values, given=tuple(sorted(values)))


def cmd_train(args) -> int:
    cfg = config_from_args(args, parse_value)
    summary = train(cfg)
    if summary.get("interrupted"):
        return 0
    if summary.get("miou") is not None:
        print(f"done: val mIoU {summary['miou']:.3f}; outputs in {cfg.workdir}")
    return 0


def add_parser(sub, argv: list[str] | None) -> None:
    t = sub.add_parser("train", help="train or fine-tune on all local devices")
    add_flags(t, arch=peek_arch(argv))
    t.set_defaults(fn=cmd_train)
