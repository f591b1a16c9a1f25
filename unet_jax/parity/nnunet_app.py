"""Application-level parity with nnU-Net: a synthetic raw dataset planned by nnU-Net's own
planner (nnunetv2's fingerprint extractor and ExperimentPlanner), model folders with seeded
weights in nnU-Net's checkpoint format, nnUNetPredictor's predictions beside `unet-jax
predict`'s, and their voxel agreement. Needs nnunetv2 (and torch)."""

import json
import os
from pathlib import Path

import numpy as np

DATASET_ID = 987
NAME = f"Dataset{DATASET_ID}_UnetJaxParity"
LABELS = {"background": 0, "outer": 1, "inner": 2}


def _write(array_zyx: np.ndarray, spacing_xyz, path: Path, dtype=np.float32, rotate: bool = False) -> None:
    import nibabel as nib
    affine = np.diag([*spacing_xyz, 1.0])
    if rotate:  # axes swapped and one flipped: a direction that is not the identity
        affine = np.array([[0, -spacing_xyz[1], 0, 12.5], [spacing_xyz[0], 0, 0, -3.0],
                           [0, 0, spacing_xyz[2], 40.0], [0, 0, 0, 1]])
    else:
        affine[:3, 3] = (1.5, -2.0, 3.0)
    nib.save(nib.Nifti1Image(array_zyx.transpose(2, 1, 0).astype(dtype), affine), str(path))


def _case(rng, shape_zyx, border: int):
    """Two channels (a CT-like and an MR-like one) of two nested ellipsoids, zero outside a
    border (so nnU-Net crops), and their labels."""
    grid = np.meshgrid(*(np.arange(n) for n in shape_zyx), indexing="ij")
    centre = np.array(shape_zyx) / 2 + rng.uniform(-1.5, 1.5, 3)
    r = np.sqrt(sum(((g - c) / (n / 4)) ** 2 for g, c, n in zip(grid, centre, shape_zyx, strict=True)))
    labels = (r < 1.0).astype(np.int64) + (r < 0.5)
    ct = -500 + 300 * labels + rng.normal(0, 50, shape_zyx)
    mr = 100 + 40 * labels + rng.normal(0, 10, shape_zyx)
    inside = np.zeros(shape_zyx, bool)
    inside[tuple(slice(border, n - border) for n in shape_zyx)] = True
    return [np.where(inside, ct, 0), np.where(inside, mr, 0)], np.where(inside, labels, 0)


def make_raw(root: Path, train_shape=(20, 24, 10), test_shape=(26, 30, 12), cases: int = 4,
             seed: int = 0) -> Path:
    """nnU-Net's raw layout under root/raw/NAME: imagesTr / labelsTr (`cases` cases),
    imagesTs (two test cases, the second rotated), dataset.json. Spacing (x, y, z) is
    (3.0, 0.8, 0.8): the coarse axis is x, so the plans transpose and resample it apart."""
    rng = np.random.default_rng(seed)
    raw = root / "raw" / NAME
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        shape = tuple(n + int(rng.integers(-1, 2)) for n in train_shape)
        channels, labels = _case(rng, shape, border=1)
        spacing = (3.0 + 0.1 * i, 0.8, 0.8)
        for c, image in enumerate(channels):
            _write(image, spacing, raw / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz")
        _write(labels, spacing, raw / "labelsTr" / f"case_{i:03d}.nii.gz", np.uint8)
    for t, rotate in enumerate((False, True)):
        channels, _ = _case(rng, test_shape, border=2)
        for c, image in enumerate(channels):
            _write(image, (3.3, 0.75, 0.85), raw / "imagesTs" / f"test_{t:03d}_{c:04d}.nii.gz", rotate=rotate)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "T2"}, "labels": LABELS, "numTraining": cases,
        "file_ending": ".nii.gz", "name": NAME}, indent=1))
    return raw


def _environment(root: Path) -> None:
    for key, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                     ("nnUNet_results", "results")):
        os.environ[key] = str(root / sub)
        (root / sub).mkdir(parents=True, exist_ok=True)


def plan(root: Path) -> dict:
    """nnU-Net's fingerprint and plans of root/raw/NAME (nnUNetv2_plan_and_preprocess without
    the preprocessing); the plans as JSON data."""
    _environment(root)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    extract_fingerprints([DATASET_ID], "DatasetFingerprintExtractor", num_processes=1,
                         check_dataset_integrity=False, clean=True, verbose=False)
    plan_experiments([DATASET_ID], "ExperimentPlanner")
    return json.loads((root / "preprocessed" / NAME / "nnUNetPlans.json").read_text())


def model_folder(root: Path, configuration: str, folds: int = 2, seed: int = 0) -> Path:
    """A trained-model folder of `configuration` as nnU-Net writes it (plans.json,
    dataset.json, fold_N/checkpoint_final.pth), each fold's network as nnU-Net builds it
    with its parameters moved off their initial values (seeded)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pre = root / "preprocessed" / NAME
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset = json.loads((pre / "dataset.json").read_text())
    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    out = root / "results" / NAME / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "plans.json").write_text(json.dumps(plans))
    (out / "dataset.json").write_text(json.dumps(dataset))
    for fold in range(folds):
        torch.manual_seed(seed + fold)
        net = nnUNetTrainer.build_network_architecture(
            manager, config, determine_num_input_channels(manager, config, dataset),
            manager.get_label_manager(dataset).num_segmentation_heads, enable_deep_supervision=False)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        (out / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                    "init_args": {"configuration": configuration, "fold": fold},
                    "inference_allowed_mirroring_axes": tuple(range(len(config.patch_size))),
                    "current_epoch": 0}, out / f"fold_{fold}" / "checkpoint_final.pth")
    return out


def test_cases(root: Path) -> list[list[Path]]:
    images = root / "raw" / NAME / "imagesTs"
    stems = sorted({p.name[:-len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz")})
    return [sorted(images.glob(f"{s}_*.nii.gz")) for s in stems]


def nnunet_predict(model: Path, cases: list[list[Path]], out: Path, folds, mirroring: bool) -> None:
    """nnUNetPredictor on the CPU, its defaults (tile_step_size 0.5, Gaussian), no worker
    processes."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=tuple(folds),
                                                   checkpoint_name="checkpoint_final.pth")
    out.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential([[str(f) for f in c] for c in cases],
                                            [str(out / c[0].name[:-len("_0000.nii.gz")]) for c in cases],
                                            save_probabilities=False, overwrite=True,
                                            folder_with_segs_from_prev_stage=None)


def agreement(ours: Path, theirs: Path) -> dict[str, tuple[float, float]]:
    """{case: (fraction of voxels equal, max |affine difference|)} of the NIfTI files in
    `theirs` against the same names in `ours`."""
    import nibabel as nib
    result = {}
    for path in sorted(theirs.glob("*.nii.gz")):
        a, b = nib.load(str(path)), nib.load(str(ours / path.name))
        x, y = np.asarray(a.dataobj), np.asarray(b.dataobj)
        same = float((x == y).mean()) if x.shape == y.shape else 0.0
        result[path.name] = (same, float(np.abs(a.affine - b.affine).max()))
    return result
