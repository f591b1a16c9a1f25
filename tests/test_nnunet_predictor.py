"""nnU-Net's predictor reproduced: each step against nnunetv2's own function (window steps,
Gaussian, padding, crop, resampling incl. the separate coarse axis, normalisation), and the
whole application against nnUNetPredictor on a dataset nnU-Net planned itself (2-D and 3-D
configurations, with and without mirroring, one and two folds): >= 99.9% of voxels equal and
the input's geometry kept."""

import json

import numpy as np
import pytest

from unet_jax.cli.main import main
from unet_jax.data import nifti, volume_layouts
from unet_jax.data.nnunet_preprocessing import nonzero_bbox, preprocess
from unet_jax.data.resampling import new_shape, resample
from unet_jax.inference import nnunet, sliding_window

nnunetv2 = pytest.importorskip("nnunetv2")
AGREEMENT = 0.999  # of the voxels of each case; float16 sums make near-ties differ from torch's ulps


@pytest.mark.parametrize("size,patch", [((43, 28, 20), (28, 28, 20)), ((200, 17), (64, 17)), ((5,), (9,))])
def test_window_steps_equal_nnunets(size, patch):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    padded = [max(s, p) for s, p in zip(size, patch, strict=True)]
    assert sliding_window.steps(padded, patch, 0.5) == compute_steps_for_sliding_window(padded, patch, 0.5)


def test_gaussian_equals_nnunets():
    import torch
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian
    theirs = compute_gaussian((10, 20, 24), 1 / 8, 10, torch.float16, torch.device("cpu")).numpy()
    np.testing.assert_array_equal(sliding_window.gaussian((10, 20, 24)), theirs)


def test_padding_equals_nnunets():
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    data = np.random.default_rng(0).normal(size=(2, 5, 9, 30)).astype(np.float32)
    theirs, slicer = pad_nd_image(data, (8, 12), "constant", {"constant_values": 0}, True, None)
    ours, inside = sliding_window.pad_to(data, (8, 12))
    np.testing.assert_array_equal(ours, theirs)
    assert inside == tuple(slicer[1:])


def test_crop_to_nonzero_equals_nnunets():
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    rng = np.random.default_rng(1)
    data = np.zeros((2, 12, 14, 9), np.float32)
    data[0, 2:9, 3:12, 1:7] = rng.normal(size=(7, 9, 6))
    data[1, 4:10, 1:5, 2:4] = 1.0
    data[0, 4, 6, 3] = 0.0  # a hole: filled
    _, _, bbox = crop_to_nonzero(data.copy())
    ours, mask = nonzero_bbox(data)
    assert ours == [list(b) for b in bbox]
    assert mask[4, 6, 3]


@pytest.mark.parametrize("spacing,target,order", [
    ((3.0, 0.8, 0.8), (2.2, 0.7, 0.9), 3),   # anisotropic: the coarse axis apart, nearest
    ((1.0, 1.1, 0.9), (1.3, 0.8, 1.0), 3),   # isotropic: cubic in 3-D
    ((0.8, 0.8, 4.0), (0.8, 0.8, 4.0), 1),   # unchanged
    ((1.0, 0.9, 1.2), (0.7, 1.0, 1.0), 1),   # linear (the export's order)
])
def test_resampling_equals_nnunets(spacing, target, order):
    from nnunetv2.preprocessing.resampling.default_resampling import (
        compute_new_shape,
        resample_data_or_seg_to_shape,
    )
    data = np.random.default_rng(2).normal(size=(2, 9, 13, 11)).astype(np.float32)
    shape = new_shape(data.shape[1:], spacing, target)
    assert shape == tuple(compute_new_shape(data.shape[1:], spacing, target))
    theirs = resample_data_or_seg_to_shape(data, shape, spacing, target, is_seg=False, order=order,
                                           order_z=0, force_separate_z=None)
    ours = resample(data, shape, spacing, target, order, 0)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("schemes,masked", [
    (["CTNormalization", "ZScoreNormalization"], [False, True]),
    (["ZScoreNormalization", "RescaleTo01Normalization"], [False, False])])
def test_preprocessing_equals_nnunets(schemes, masked):
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    rng = np.random.default_rng(3)
    data = np.zeros((2, 14, 20, 9), np.float32)
    data[:, 1:13, 2:19, 1:8] = rng.normal(50, 20, size=(2, 12, 17, 7))
    config = {"spacing": [2.9, 0.75, 0.75], "patch_size": [8, 16, 16], "normalization_schemes": schemes,
              "use_mask_for_norm": masked, "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor",
              "batch_size": 2, "median_image_size_in_voxels": [9, 20, 14], "batch_dice": False,
              "resampling_fn_data": "resample_data_or_seg_to_shape",
              "resampling_fn_seg": "resample_data_or_seg_to_shape",
              "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
              "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                            "force_separate_z": None},
              "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0,
                                           "force_separate_z": None},
              "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                     "force_separate_z": None},
              "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}
    plans = {"dataset_name": "x", "plans_name": "x", "original_median_spacing_after_transp": [1, 1, 1],
             "original_median_shape_after_transp": [1, 1, 1], "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0], "configurations": {"c": config},
             "experiment_planner_used": "x", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {
                 str(c): {"mean": 40.0 + c, "std": 15.0, "percentile_00_5": 5.0, "percentile_99_5": 90.0,
                          "median": 50.0, "min": 0.0, "max": 100.0} for c in range(2)}}
    spacing = (0.8, 0.7, 3.1)
    manager = PlansManager(plans)
    dataset = {"channel_names": {"0": "CT", "1": "T2"}, "labels": {"background": 0, "a": 1},
               "file_ending": ".nii.gz"}
    theirs, _, _ = DefaultPreprocessor(verbose=False).run_case_npy(
        data.copy(), None, {"spacing": list(spacing)}, manager, manager.get_configuration("c"), dataset)
    ours = preprocess(data, spacing, plans, config)
    np.testing.assert_array_equal(ours.data, theirs)


def test_nifti_case_keeps_geometry_and_channels(tmp_path):
    import nibabel as nib
    affine = np.array([[0, -0.7, 0, 3.0], [0.9, 0, 0, -1.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (x, y, z) in the file
    for c in range(2):
        nib.save(nib.Nifti1Image(volume + c, affine), str(tmp_path / f"a_{c:04d}.nii.gz"))
    case = nifti.read_case([tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"])
    assert case.data.shape == (2, 6, 5, 4) and case.spacing == pytest.approx((2.5, 0.7, 0.9))
    np.testing.assert_array_equal(case.data[1], volume.transpose(2, 1, 0) + 1)
    labels = (case.data[0] > 50).astype(np.uint8)
    nifti.write_like(labels, case.reference, tmp_path / "out.nii.gz")
    back = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels.transpose(2, 1, 0))
    with pytest.raises(nifti.VolumeFileError, match="not a readable NIfTI"):
        (tmp_path / "bad.nii.gz").write_bytes(b"nonsense")
        nifti.read_case([tmp_path / "bad.nii.gz"])


def test_cases_are_grouped_by_channel_files_and_problems_named():
    from pathlib import Path
    files = [Path(f"d/p1_000{c}.nii.gz") for c in range(2)] + [Path("d/p2_0000.nii.gz")]
    cases, problems = volume_layouts.group_cases(files, 2)
    assert cases == [("p1", files[:2])]
    assert len(problems) == 1 and "case p2" in problems[0] and "missing p2_0001" in problems[0]
    assert volume_layouts.group_cases([Path("d/scan.nii.gz")], 1) == ([("scan", [Path("d/scan.nii.gz")])], [])
    cases, problems = volume_layouts.group_cases([Path("a/c_0000.nii.gz"), Path("b/c_0000.nii.gz")], 1)
    assert cases == [] and "case c is in 2 inputs" in problems[0] and "overwrite" in problems[0]


def test_bad_options_and_missing_folds_are_refused(tmp_path):
    from unet_jax.checkpoints.saved import METADATA
    with pytest.raises(ValueError, match=r"step 2: .*\(0, 1\]"):
        nnunet.NnunetPredictor([object()], step=2)
    with pytest.raises(ValueError, match="batch -1"):
        nnunet.NnunetPredictor([object()], batch=-1)
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "fold_0" / METADATA).write_text("{}")
    with pytest.raises(nnunet.NotNnunetModelError, match="no fold.*5; it has 0"):
        nnunet.open_folds(tmp_path, ["0", "5"])


def test_region_labels_follow_nnunets_rule():
    regions = nnunet.Labels.of({"labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3},
                                "regions_class_order": [1, 2, 3]})
    assert regions.heads == 3 and regions.regions == ([1, 2, 3], [2, 3], [3])
    logits = np.full((3, 2, 2), -5, np.float16)
    logits[0, 0] = 5  # "whole" only on the first row; "enh" painted last where all three
    logits[:, 1, 1] = 5
    seg, _ = regions.segmentation(logits, False)
    np.testing.assert_array_equal(seg, [[1, 1], [0, 3]])
    plain = nnunet.Labels.of({"labels": {"background": 0, "a": [1], "b": 2}})  # one-element lists: labels
    assert plain.regions is None and plain.heads == 3
    with pytest.raises(ValueError, match="0..K-1"):
        nnunet.Labels.of({"labels": {"background": 0, "a": 2}})


def test_a_2d_nifti_is_refused_by_name(tmp_path):
    import nibabel as nib
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(nifti.VolumeFileError, match="flat.nii.gz: a 2-D NIfTI image"):
        nifti.read_case([tmp_path / "flat.nii.gz"])


# --- the application against nnUNetPredictor ------------------------------------------------

@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    from unet_jax.parity import nnunet_app
    root = tmp_path_factory.mktemp("nnunet")
    nnunet_app.make_raw(root)
    plans = nnunet_app.plan(root)
    folders = {c: nnunet_app.model_folder(root, c) for c in ("2d", "3d_fullres")}
    return root, plans, folders


@pytest.mark.slow
@pytest.mark.parametrize("configuration,folds,mirroring", [
    ("3d_fullres", [0], True), ("3d_fullres", [0, 1], False), ("2d", [0, 1], True), ("2d", [0], False)])
def test_predict_agrees_with_nnunet_predictor(planned, tmp_path, configuration, folds, mirroring, capsys):
    from unet_jax.parity import nnunet_app
    root, plans, folders = planned
    assert plans["transpose_forward"] != [0, 1, 2]  # the plans reorder axes: that path is exercised
    folder = folders[configuration]
    cases = nnunet_app.test_cases(root)
    theirs, ours, converted = tmp_path / "nnunet", tmp_path / "ours", tmp_path / "converted"
    nnunet_app.nnunet_predict(folder, cases, theirs, folds, mirroring)
    assert main(["convert", str(folder), "-o", str(converted)]) == 0
    argv = ["predict", str(converted), str(cases[0][0].parent), "-o", str(ours), "--no-progress",
            "--folds", *map(str, folds)] + ([] if mirroring else ["--no-mirroring"])
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"folds {', '.join(map(str, folds))}" in printed and "2 case(s)" in printed
    result = nnunet_app.agreement(ours, theirs)
    assert len(result) == len(cases)
    for name, (same, affine) in result.items():
        assert same >= AGREEMENT, (name, same)
        assert affine <= 1e-4, (name, affine)
    labels = json.loads((folder / "dataset.json").read_text())["labels"]
    seen = set()
    for path in ours.glob("*.nii.gz"):
        seen |= set(np.unique(np.asarray(nifti.load(path).dataobj)).tolist())
    assert seen <= set(labels.values()) and len(seen) > 1  # real labels, not one constant
