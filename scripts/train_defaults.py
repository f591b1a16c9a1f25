"""Do the training defaults learn? The real command `unet-jax train --arch A --epochs N`
(the schedule ends at epoch N) with no other option, on the embedded synthetic data and 4
simulated CPU devices, for every arch (or those given); prints a Markdown table: the values
that applied, val mIoU per epoch, seconds, and whether epoch N reaches the goal.

    python scripts/train_defaults.py [ARCH ...] [--epochs 4] [--goal 0.5] [--workdir runs/defaults]
    python scripts/train_defaults.py labml_unet -- --lr 3e-3   # extra train flags, to try values

Exit code 1 when an arch misses the goal. Each run is the real command in a subprocess, in a
fresh workdir (WORKDIR/ARCH).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ENV = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}


def run(arch: str, epochs: int, workdir: Path, extra: list[str]) -> tuple[list[float], dict, float, str]:
    """(val mIoU per epoch, the training options that applied, seconds, stderr tail) of
    `unet-jax train --arch arch --epochs epochs`."""
    shutil.rmtree(workdir, ignore_errors=True)
    command = [sys.executable, "-m", "unet_jax.cli", "train", "--arch", arch, "--epochs", str(epochs),
               "--workdir", str(workdir), "--no-progress", *extra]
    started = time.perf_counter()
    r = subprocess.run(command, env=dict(os.environ, **ENV), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    metrics, record = workdir / "metrics.jsonl", workdir / "run.json"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    applied = json.loads(record.read_text())["train"] if record.is_file() else {}
    return [r["miou"] for r in rows], applied, seconds, "" if r.returncode == 0 else r.stderr[-2000:]


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archs", nargs="*")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--goal", type=float, default=0.5)
    p.add_argument("--workdir", default="runs/defaults")
    args = p.parse_args(argv)
    from unet_jax import registry
    archs = args.archs or registry.list_models()
    failed = 0
    print(f"`unet-jax train --arch A --epochs {args.epochs}{''.join(' ' + a for a in extra)}`, "
          f"{' '.join(f'{k}={v}' for k, v in ENV.items())}; goal: val mIoU >= {args.goal} "
          f"at epoch {args.epochs}\n")
    print(f"| arch | image size | lr | schedule | warm-up | loss | val mIoU, epochs 1-{args.epochs} | time "
          "| goal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in archs:
        mious, applied, seconds, error = run(arch, args.epochs, Path(args.workdir) / arch, extra)
        ok = len(mious) >= args.epochs and mious[args.epochs - 1] >= args.goal
        failed += not ok
        shown = " ".join(f"{m:.3f}" for m in mious) or "-"
        print(f"| {arch} | {applied.get('image_size', '?')} | {applied.get('lr', 0):.0e} | "
              f"{applied.get('schedule', '?')} | {applied.get('warmup_epochs', '?')} | "
              f"{applied.get('loss', '?')} | {shown} | "
              f"{seconds:.0f} s | {'PASS' if ok else 'FAIL'} |", flush=True)
        if error:
            print(error, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
