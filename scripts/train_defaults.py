"""Do the training defaults learn? `unet-jax train --arch A` with no other option, on the
embedded synthetic data and 4 simulated CPU devices, for every arch (or those given), stopped
after epoch 4; prints val mIoU per epoch and whether epoch 4 reaches the goal.

    python scripts/train_defaults.py [ARCH ...] [--epochs 4] [--goal 0.5] [--workdir runs/defaults]

Exit code 1 when an arch misses the goal. Each run is the real command in a subprocess.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(arch: str, epochs: int, workdir: Path) -> tuple[list[float], float, str]:
    """(val mIoU per epoch, seconds, stderr tail) of the default run of `arch`."""
    from unet_jax.train import TrainConfig
    from unet_jax.train.model import resolve
    cfg, _ = resolve(TrainConfig(arch=arch))
    steps = epochs * (cfg.train_samples // cfg.batch_size)
    shutil.rmtree(workdir, ignore_errors=True)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "unet_jax.cli", "train", "--arch", arch,
                        "--workdir", str(workdir), "--stop-at-step", str(steps), "--no-progress"],
                       env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    metrics = workdir / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return [r["miou"] for r in rows], seconds, "" if r.returncode == 0 else r.stderr[-2000:]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archs", nargs="*")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--goal", type=float, default=0.5)
    p.add_argument("--workdir", default="runs/defaults")
    args = p.parse_args()
    from unet_jax import registry
    archs = args.archs or registry.list_models()
    failed = 0
    print(f"{'arch':<14} {'size':>4} {'lr':>7} {'warmup':>6} {'loss':<8} val mIoU by epoch{'':<14} time")
    for arch in archs:
        defaults = registry.train_defaults(arch)
        mious, seconds, error = run(arch, args.epochs, Path(args.workdir) / arch)
        ok = len(mious) >= args.epochs and mious[args.epochs - 1] >= args.goal
        failed += not ok
        shown = " ".join(f"{m:.3f}" for m in mious)
        print(f"{arch:<14} {defaults['image_size']:>4} {defaults['lr']:>7.0e} "
              f"{defaults['warmup_epochs']:>6} {defaults['loss']:<8} {shown:<30} {seconds:>5.0f} s  "
              f"{'PASS' if ok else 'FAIL'}", flush=True)
        if error:
            print(error, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
