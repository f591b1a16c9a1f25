"""`unet-jax` command line: list, convert, parity, export, train, data, predict, evaluate,
bench, tune, demo (one module per job in `unet_jax.cli`; argparse lives only in this package).

Commands that compare against torch (`parity`, `convert` verification, `demo`, `bench`)
import the torch references from `unet_jax.parity` when they run; the rest never import torch.
"""

import argparse
import sys

from unet_jax import compile_cache, compile_notice
from unet_jax.cli import bench, data, demo, models, predict, tune
from unet_jax.cli import train as train_command
from unet_jax.cli.parsing import Parser, did_you_mean
from unet_jax.convert.engine import ConversionError
from unet_jax.convert.io import CheckpointError
from unet_jax.data import datasets
from unet_jax.kernels.cpu import host_memory
from unet_jax.train import NonFiniteLossError


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
    models.add_parsers(sub)
    train_command.add_parser(sub, argv)
    data.add_parser(sub)
    predict.add_parsers(sub)
    bench.add_parser(sub)
    tune.add_parser(sub)
    demo.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command != "bench":  # the bench sets its own (scripts/bench.py skips the CLI)
        host_memory.keep_freed_memory()  # before JAX starts its threads
        compile_cache.enable()
    # for this command (main may run in-process): messages name flags, compilations announced
    before = datasets.COMMAND_LINE, compile_notice.ENABLED
    datasets.COMMAND_LINE, compile_notice.ENABLED = True, args.command != "bench"
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
        datasets.COMMAND_LINE, compile_notice.ENABLED = before


if __name__ == "__main__":
    sys.exit(main())
