"""`unet-jax predict` on volumes: nnU-Net folds on NIfTI cases, as nnUNetPredictor predicts."""

import sys
import time
from pathlib import Path

from tqdm import tqdm

from unet_jax.data import nifti
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
    """A model of nnU-Net folds, or NIfTI inputs."""
    return nnunet.is_volume_model(args.model) or any(nifti.is_nifti(i) for i in args.inputs)


def cmd_predict_volumes(args, check_output) -> int:
    if not nnunet.is_volume_model(args.model):
        raise ValueError(f"{args.model} holds no nnU-Net model: volumes (NIfTI) are predicted with an "
                         "nnU-Net model folder, or its folds converted by `unet-jax convert`")
    check_output(args)
    files, unmatched = volume_files(args.inputs)
    for item in unmatched:
        print(f"error:   {item}: no such NIfTI file (.nii, .nii.gz) or folder holding one", file=sys.stderr)
    if not files:
        raise ValueError("no input volumes")
    predictor = nnunet.NnunetPredictor(nnunet.open_folds(args.model, args.folds or None),
                                       mirroring=args.mirroring, step=args.step, batch=args.batch)
    cases = nnunet.group_cases(files, predictor.channels)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    ending = ".nii.gz"
    print(f"model:   nnU-Net {predictor.configuration_name}, folds {', '.join(map(str, predictor.folds))}; "
          f"{predictor.labels.heads} {'regions' if predictor.labels.regions else 'labels'}; patch "
          f"{'x'.join(map(str, predictor.patch))}, step {predictor.step}, mirroring axes "
          f"{list(predictor.mirror_axes) or 'none'}; {len(predictor.devices)} device(s)")
    failed = list(unmatched)
    for name, channels in tqdm(cases, unit="case", disable=not args.progress):
        started = time.perf_counter()
        try:
            seg = predictor.predict_files(channels, out / f"{name}{ending}", args.probabilities)
        except (nifti.VolumeFileError, ValueError) as e:
            print(f"error:   {name}: {e}; skipped", file=sys.stderr)
            failed.append(name)
            continue
        print(f"case:    {name} ({len(channels)} file(s)) -> {out / (name + ending)} "
              f"{'x'.join(map(str, seg.shape))}, {time.perf_counter() - started:.1f} s")
    done = len(cases) - (len(failed) - len(unmatched))
    print(f"done:    {done} case(s) -> {out}" + (f"; {len(failed)} failed" if failed else ""))
    return 2 if failed else 0
