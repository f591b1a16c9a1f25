"""unet-jax predict against nnunetv2's nnUNetPredictor on a synthetic dataset nnU-Net plans
itself, at sizes of your choice: voxel agreement, geometry and the time of each predictor on
this machine (both on the CPU).

    python scripts/nnunet_parity.py [--train-shape 40 48 24] [--test-shape 56 64 30] [--folds 2]
                                    [--configurations 2d 3d_fullres] [--workdir DIR]
"""

import argparse
import tempfile
import time
from pathlib import Path

from unet_jax.cli.main import main as unet_jax_main
from unet_jax.parity import nnunet_app


def run(args) -> None:
    root = Path(args.workdir or tempfile.mkdtemp(prefix="nnunet_parity_"))
    nnunet_app.make_raw(root, tuple(args.train_shape), tuple(args.test_shape), cases=args.cases)
    started = time.perf_counter()
    plans = nnunet_app.plan(root)
    print(f"planned by nnU-Net in {time.perf_counter() - started:.0f} s; transpose_forward "
          f"{plans['transpose_forward']}; configurations {', '.join(plans['configurations'])}")
    cases = nnunet_app.test_cases(root)
    print("| configuration | patch | folds | mirroring | case | voxels equal | max affine diff | "
          "unet-jax s | nnUNetPredictor s |\n|---|---|---|---|---|---|---|---|---|")
    for configuration in args.configurations:
        folder = nnunet_app.model_folder(root, configuration, folds=args.folds)
        converted = root / f"converted_{configuration}"
        unet_jax_main(["convert", str(folder), "-o", str(converted)])
        patch = "x".join(map(str, plans["configurations"][configuration]["patch_size"]))
        for folds in ([0], list(range(args.folds))) if args.folds > 1 else ([0],):
            for mirroring in (True, False):
                tag = f"{configuration}_{len(folds)}_{int(mirroring)}"
                theirs, ours = root / f"nnunet_{tag}", root / f"ours_{tag}"
                started = time.perf_counter()
                nnunet_app.nnunet_predict(folder, cases, theirs, folds, mirroring)
                their_time = time.perf_counter() - started
                started = time.perf_counter()
                unet_jax_main(["predict", str(converted), str(cases[0][0].parent), "-o", str(ours),
                               "--no-progress", "--folds", *map(str, folds)]
                              + ([] if mirroring else ["--no-mirroring"]))
                our_time = time.perf_counter() - started
                for name, (same, affine) in nnunet_app.agreement(ours, theirs).items():
                    print(f"| {configuration} | {patch} | {len(folds)} | {'yes' if mirroring else 'no'} | "
                          f"{name} | {100 * same:.3f}% | {affine:.1e} | {our_time:.1f} | {their_time:.1f} |",
                          flush=True)


if __name__ == "__main__":  # nnU-Net's planner starts worker processes
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-shape", type=int, nargs=3, default=(40, 48, 24),
                   help="z y x of the training cases")
    p.add_argument("--test-shape", type=int, nargs=3, default=(56, 64, 30),
                   help="z y x of the two test cases")
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--configurations", nargs="*", default=["2d", "3d_fullres"])
    p.add_argument("--workdir", help="keep the dataset, models and predictions here")
    run(p.parse_args())
