"""`unet-jax predict` on volumes: nnU-Net folds on NIfTI cases, as nnUNetPredictor predicts."""

import sys
import time
from pathlib import Path

from tqdm import tqdm

from unet_jax.data import nifti, volume_layouts
from unet_jax.inference import nnunet


def volume_files(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """NIfTI files named by `inputs` (files or folders), and the inputs holding none."""
    files, unmatched = [], []
    for item in inputs:
        path = Path(item)
        found = (sorted(p for p in path.iterdir() if nifti.is_nifti(p)) if path.is_dir()
                 else [path] if path.is_file() and nifti.is_nifti(path) else [])
        files += found
        if not found:
            unmatched.append(item)
    return files, unmatched


def wants_volumes(args) -> bool:
    """An nnU-Net model folder (or its converted folds), or NIfTI inputs."""
    return nnunet.is_volume_model(args.model) or any(
        nifti.is_nifti(i) or (Path(i).is_dir() and any(nifti.is_nifti(p) for p in Path(i).iterdir()))
        for i in args.inputs)


def cmd_predict_volumes(args, check_output) -> int:
    check_output(args)
    files, unmatched = volume_files(args.inputs)
    for item in unmatched:
        print(f"error:   {item}: no such NIfTI file (.nii, .nii.gz) or folder holding one", file=sys.stderr)
    if not files:
        raise ValueError("no input volumes")
    predictor = nnunet.NnunetPredictor(nnunet.open_folds(args.model, args.folds or None),
                                       mirroring=args.mirroring, step=args.step, batch=args.batch)
    cases, problems = volume_layouts.group_cases(files, predictor.channels)
    for problem in problems:
        print(f"error:   {problem}; skipped", file=sys.stderr)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f"model:   nnU-Net {predictor.configuration_name}, folds {', '.join(map(str, predictor.folds))}; "
          f"{predictor.labels.heads} {'regions' if predictor.labels.regions else 'labels'}; patch "
          f"{'x'.join(map(str, predictor.patch))}, step {predictor.step}, mirroring axes "
          f"{list(predictor.mirror_axes) or 'none'}; {len(predictor.devices)} device(s)")
    failed = len(unmatched) + len(problems)
    done = 0
    for name, channels in tqdm(cases, unit="case", disable=not args.progress):
        started = time.perf_counter()
        target = out / f"{name}.nii.gz"
        try:
            seg = predictor.predict_files(channels, target, args.probabilities)
        except ValueError as e:  # a file that does not fit (VolumeFileError, PlansError among them)
            print(f"error:   {name}: {e}; skipped", file=sys.stderr)
            failed += 1
            continue
        done += 1
        print(f"case:    {name} ({len(channels)} file(s)) -> {target} "
              f"{'x'.join(map(str, seg.shape))}, {time.perf_counter() - started:.1f} s")
    print(f"done:    {done} case(s) -> {out}" + (f"; {failed} failed" if failed else ""))
    return 2 if failed else 0
