"""Training on volumes against nnunetv2 2.8.1's own code: label-map resampling and
preprocessing with labels, the 5-fold split, patch placement (get_bbox), the loss with deep
supervision (float64), two optimizer steps of nnU-Net's SGD / poly / clipping / loss on an
imported PlainConvUNet (float64, weights far from defaults); and a whole run on a dataset
nnU-Net planned itself, then predicted from the workdir."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax.data import volume_patches
from unet_jax.data.nnunet_preprocessing import preprocess
from unet_jax.data.resampling import resample_seg
from unet_jax.train import losses

nnunetv2 = pytest.importorskip("nnunetv2")
torch = pytest.importorskip("torch")


def _blobs(rng, shape, labels=3):
    """A label map of smooth regions (so resampling meets real boundaries and ties)."""
    from scipy.ndimage import zoom
    coarse = rng.integers(0, labels, tuple(max(2, n // 3) for n in shape))
    return zoom(coarse, [n / m for n, m in zip(shape, coarse.shape, strict=True)], order=0)


@pytest.mark.parametrize("shape,spacing,target", [
    ((10, 12, 9), (1.0, 1.0, 1.0), (0.7, 1.3, 0.8)),   # every axis at order 1
    ((6, 20, 22), (4.0, 1.0, 1.0), (2.5, 0.8, 0.8)),   # anisotropic: the coarse axis apart, nearest
    ((5, 16, 16), (1.0, 1.0, 1.0), (1.0, 0.5, 0.5))])  # exact factor 2: ties at every boundary
def test_label_resampling_equals_nnunets(shape, spacing, target):
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
    seg = (_blobs(np.random.default_rng(0), shape) - 1).astype(np.int16)[None]  # -1, 0, 1
    size = tuple(int(round(s / t * n)) for n, s, t in zip(shape, spacing, target, strict=True))
    theirs = resample_data_or_seg_to_shape(seg, size, spacing, target, is_seg=True, order=1, order_z=0,
                                           force_separate_z=None)
    np.testing.assert_array_equal(resample_seg(seg, size, spacing, target, 1, 0), theirs)


def test_preprocessing_with_labels_equals_nnunets():
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    rng = np.random.default_rng(3)
    data = np.zeros((1, 14, 20, 9), np.float32)
    data[:, 1:13, 2:19, 1:8] = rng.normal(50, 20, size=(1, 12, 17, 7))
    data[:, 1:6, 2:8, 1:4] = 0  # a corner of the crop outside the non-zero region: labelled -1
    seg = np.zeros((1, 14, 20, 9), np.int16)
    seg[0, 3:10, 5:15, 2:7] = _blobs(rng, (7, 10, 5))
    kwargs = {"order": 3, "order_z": 0, "force_separate_z": None}
    config = {"spacing": [2.9, 0.75, 0.75], "patch_size": [8, 16, 16], "data_identifier": "x",
              "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [True],
              "preprocessor_name": "DefaultPreprocessor", "batch_size": 2, "batch_dice": False,
              "median_image_size_in_voxels": [9, 20, 14],
              **{f"resampling_fn_{k}": "resample_data_or_seg_to_shape"
                 for k in ("data", "seg", "probabilities")},
              "resampling_fn_data_kwargs": {"is_seg": False, **kwargs},
              "resampling_fn_seg_kwargs": {"is_seg": True, **kwargs, "order": 1},
              "resampling_fn_probabilities_kwargs": {"is_seg": False, **kwargs, "order": 1},
              "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}
    plans = {"dataset_name": "x", "plans_name": "x", "original_median_spacing_after_transp": [1, 1, 1],
             "original_median_shape_after_transp": [1, 1, 1], "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0], "configurations": {"c": config},
             "experiment_planner_used": "x", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": {"mean": 40.0, "std": 15.0}}}
    manager = PlansManager(plans)
    dataset = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "b": 2},
               "file_ending": ".nii.gz"}
    spacing = (0.8, 0.7, 3.1)
    data_theirs, seg_theirs, _ = DefaultPreprocessor(verbose=False).run_case_npy(
        data.copy(), seg.copy(), {"spacing": list(spacing)}, manager, manager.get_configuration("c"), dataset)
    ours = preprocess(data, spacing, plans, config, seg)
    np.testing.assert_array_equal(ours.data, data_theirs)
    np.testing.assert_array_equal(ours.seg, seg_theirs)
    assert (ours.seg == -1).any() and set(np.unique(ours.seg)) <= {-1, 0, 1, 2}


@pytest.mark.parametrize("cases", [5, 7, 13])
def test_fold_split_equals_nnunets(cases):
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    names = [f"case_{i:03d}" for i in np.random.default_rng(cases).permutation(cases)]
    theirs = generate_crossval_split(sorted(names))
    for fold in range(5):
        assert volume_patches.fold_split(names, fold) == (theirs[fold]["train"], theirs[fold]["val"])


def _their_bbox(shape, patch, need_to_pad, force_fg, locations):
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    loader = types.SimpleNamespace(need_to_pad=np.array(need_to_pad), patch_size=patch, has_ignore=False,
                                   annotated_classes_key=(0, 1, 2))
    return nnUNetDataLoader.get_bbox(loader, np.array(shape), force_fg, locations)[0]


def test_patch_placement_equals_nnunets_get_bbox():
    shape, patch, need = (30, 7, 50), (16, 12, 20), (5, 4, 0)
    np.random.seed(0)
    theirs = np.array([_their_bbox(shape, patch, need, False, None) for _ in range(600)])
    rng = np.random.default_rng(0)
    ours = np.array([volume_patches.patch_lower(shape, patch, need, rng, None) for _ in range(600)])
    np.testing.assert_array_equal(ours.min(0), theirs.min(0))  # the same range, both ends reached
    np.testing.assert_array_equal(ours.max(0), theirs.max(0))
    for voxel in ([0, 0, 0], [29, 6, 49], [15, 3, 25]):  # one location: no randomness left
        locations = {1: np.array([voxel]), 2: np.zeros((0, 3), int)}
        their = _their_bbox(shape, patch, need, True, {1: np.array([[0, *voxel]]), 2: []})
        assert volume_patches.patch_lower(shape, patch, need, rng, locations) == list(their)
    assert [volume_patches.forced_foreground(r, 2) for r in range(2)] == [False, True]
    assert [volume_patches.forced_foreground(r, 6) for r in range(6)] == [False] * 4 + [True] * 2


def _their_loss(heads_fine_first, labels, batch_dice, ignore):
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    n = len(heads_fine_first)
    weights = np.array([1 / 2 ** i for i in range(n)])
    weights[-1] = 0
    loss = DeepSupervisionWrapper(DC_and_CE_loss(
        {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
        weight_dice=1, ignore_label=ignore, dice_class=MemoryEfficientSoftDiceLoss), weights / weights.sum())
    scales = [[0.5 ** i] * (labels.ndim - 1) for i in range(n)]
    down = DownsampleSegForDSTransform(scales)
    per_sample = [down._apply_to_segmentation(torch.from_numpy(s[None].astype(np.int16))) for s in labels]
    targets = [torch.stack([p[i] for p in per_sample]).double() for i in range(n)]
    outs = [torch.from_numpy(np.moveaxis(h, -1, 1)) for h in heads_fine_first]
    return float(loss(outs, targets))


class _Float64Sums:
    """torch as nnunetv2's dice module sees it, its `dtype=torch.float32` sums made float64,
    so the reference itself is float64 throughout."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.mark.parametrize("batch_dice,ignore", [(False, None), (True, None), (False, 3)])
def test_deep_supervision_loss_equals_nnunets_in_float64(batch_dice, ignore, monkeypatch):
    import nnunetv2.training.loss.dice as dice_module
    rng = np.random.default_rng(4)
    labels = _blobs(rng, (2, 16, 8, 12), labels=4 if ignore else 3).astype(np.uint8)
    heads = [3 * rng.normal(size=(2, 16 // 2 ** i, 8 // 2 ** i, 12 // 2 ** i, 3)) for i in range(3)]
    as_shipped = _their_loss(heads, labels, batch_dice, ignore)  # its Dice sums in float32
    monkeypatch.setattr(dice_module, "torch", _Float64Sums())
    theirs = _their_loss(heads, labels, batch_dice, ignore)
    assert abs(as_shipped - theirs) <= 1e-6 * max(1.0, abs(theirs))
    ours_labels = np.where(labels == ignore, 255, labels) if ignore else labels
    with jax.enable_x64(True):
        ours = losses.segmentation_loss([jnp.asarray(h) for h in heads[::-1]], jnp.asarray(ours_labels),
                                        {"dc_ce_batch" if batch_dice else "dc_ce": 1.0}, 255,
                                        losses.nnunet_head_weights(3))
        assert ours.dtype == jnp.float64
    assert abs(float(ours) - theirs) <= 1e-10 * max(1.0, abs(theirs)), (float(ours), theirs)


def _tiny_plans(patch=(8, 16, 16)):
    """Plans of one 3d_fullres configuration with a four-stage PlainConvUNet (three
    deep-supervision heads, the first axis pooled later than the others)."""
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 4, "features_per_stage": [4, 8, 16, 16],
                            "conv_op": "torch.nn.modules.conv.Conv3d",
                            "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                            "n_conv_per_stage": [2, 2, 2, 2], "n_conv_per_stage_decoder": [1, 1, 1],
                            "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    return {"configurations": {"3d_fullres": {"patch_size": list(patch), "architecture": arch,
                                              "batch_size": 2, "batch_dice": False}}}


@pytest.mark.slow
def test_two_training_steps_equal_nnunets_in_float64(monkeypatch):
    """nnUNetTrainer's step (DC + CE over the deep-supervision heads, clip 12, SGD Nesterov
    momentum 0.99 weight decay 3e-5, poly per epoch) on the same PlainConvUNet, weights far
    from defaults, one step per epoch so the learning rate moves: every parameter after two
    steps within 1e-10."""
    import nnunetv2.training.loss.dice as dice_module
    from flax import nnx
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    import unet_jax
    from unet_jax.convert.model_folders import nnunet_network
    from unet_jax.parity import harness
    from unet_jax.train import volumes
    from unet_jax.train.config import TrainConfig
    from unet_jax.train.optimizer import make_optimizer, unreached_parameters

    plans = _tiny_plans()
    dataset = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "b": 2}}
    torch.manual_seed(5)
    module = nnunet_network(plans, dataset, "3d_fullres", deep_supervision=True)[0].double().train()
    harness.randomize_weights(module)
    state = {k: v.numpy().copy() for k, v in module.state_dict().items()}
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 1, 8, 16, 16)).astype(np.float32).astype(np.float64)
    labels = _blobs(rng, (2, 8, 16, 16)).astype(np.uint8)

    cfg = volumes.with_nnunet_defaults(TrainConfig(epochs=4), plans["configurations"]["3d_fullres"], 3, 3)
    source = volumes.NnunetSource(plans, dataset, "3d_fullres", state, "test", None)
    with jax.enable_x64(True):
        model = volumes.training_network(source, 0, "float64")
        # the coarsest head has weight 0: torch leaves its layer without a gradient, unchanged
        assert unreached_parameters(model, cfg.head_weights) == {
            "torch.decoder.seg_layers.0.weight", "torch.decoder.seg_layers.0.bias"}
        optimizer = nnx.Optimizer(model, make_optimizer(cfg, model, 1), wrt=nnx.Param)
        terms, xj = losses.parse_loss(cfg.loss), jnp.asarray(np.moveaxis(x, 1, -1))

        def loss_of(m):  # the train step's, with the input kept float64
            return losses.segmentation_loss(m(xj), jnp.asarray(labels), terms, 255, cfg.head_weights)

        for _ in range(2):
            ours_loss, grads = nnx.value_and_grad(loss_of)(model)
            optimizer.update(model, grads)
        got = unet_jax.to_torch_state_dict(model)

    monkeypatch.setattr(dice_module, "torch", _Float64Sums())
    weights = np.array([1, 0.5, 0.0]) / 1.5
    loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False,
                                                  "ddp": False}, {}, weight_ce=1, weight_dice=1,
                                                 ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss),
                                  weights)
    opt = torch.optim.SGD(module.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    schedule = PolyLRScheduler(opt, 1e-2, 4)
    targets = [torch.from_numpy(labels[:, None, a::b, c::d, c::d].astype(np.float64))  # nearest-exact:
               for a, b, c, d in ((0, 1, 0, 1), (0, 1, 1, 2), (1, 2, 2, 4))]  # voxel floor((i + 0.5) * f)
    for epoch in range(2):
        schedule.step(epoch)
        opt.zero_grad()
        theirs_loss = loss(module(torch.from_numpy(x)), targets)
        theirs_loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 12)
        opt.step()
    assert abs(float(ours_loss) - float(theirs_loss)) <= 1e-10  # the second step's loss
    for key, want in module.state_dict().items():
        want = want.numpy()
        err = np.abs(got[key] - want).max() / max(1.0, np.abs(want).max())
        assert err <= 1e-10, (key, err)


def _cached_case(tmp_path, name="a"):
    """A cached case 20x24x28 whose only foreground is a 3x3x3 cube in a corner."""
    data = np.random.default_rng(0).normal(size=(2, 20, 24, 28)).astype(np.float32)
    seg = np.zeros((20, 24, 28), np.int16)
    seg[1:4, 2:5, 22:25] = 2
    seg[:, :, :1] = -1
    case = volume_patches.CachedCase(name, tmp_path / f"{name}.npy", tmp_path / f"{name}_seg.npy",
                                     tmp_path / f"{name}_loc.npz")
    np.save(case.data_file, data)
    np.save(case.seg_file, seg)
    np.savez(case.locations_file, **{str(k): v for k, v in
                                     volume_patches.foreground_locations(seg, [1, 2]).items()})
    return case


def test_patches_force_foreground_in_the_last_third_of_each_batch(tmp_path):
    from unet_jax.data.volume_augment import VolumeAugmentation
    case = _cached_case(tmp_path)
    patch = (8, 8, 8)
    train = volume_patches.VolumePatches([case], patch, 3, 30, VolumeAugmentation.for_patch(patch), seed=1)
    val = volume_patches.VolumePatches([case], patch, 3, 9, None, seed=1)
    for index in range(30):
        image, mask = train.sample(index, np.random.default_rng(index), index % 3)
        assert image.shape == (*patch, 2) and image.dtype == np.float32 and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 2}  # -1 made background
        if index % 3 == 2:  # forced: centred on the cube, which fits in the patch
            assert (mask == 2).any()
    forced = [(val[i][1] == 2).any() for i in range(9)]
    assert forced[2::3] == [True] * 3
    np.testing.assert_array_equal(val[5][0], val[5][0])  # validation patches are fixed
    assert not all(forced)  # unforced rows land anywhere: most miss a 3x3x3 cube
    flat = volume_patches.VolumePatches([case], (8, 8), 3, 30, VolumeAugmentation.for_patch((8, 8)), seed=1)
    for index in range(2, 30, 3):  # a 2-D configuration: forced rows on a slice through the cube
        image, mask = flat.sample(index, np.random.default_rng(index), 2)
        assert image.shape == (8, 8, 2) and (mask == 2).any()


@pytest.mark.slow
def test_training_on_a_planned_volume_dataset_then_predicting_from_the_workdir(tmp_path, monkeypatch):
    """nnU-Net plans its own dataset; `unet-jax train` trains the 3d_fullres network from
    those plans (2 epochs of 3 steps), resumes, and `unet-jax predict` reads the workdir:
    NIfTI labels with the input's geometry."""
    import nibabel as nib

    from unet_jax.cli.main import main
    from unet_jax.parity import nnunet_app

    monkeypatch.setenv(volume_patches.CACHE_ENV, str(tmp_path / "cache"))
    raw = nnunet_app.make_raw(tmp_path, cases=5)
    nnunet_app.plan(tmp_path)
    plans = tmp_path / "preprocessed" / nnunet_app.NAME / "nnUNetPlans.json"
    run = tmp_path / "run"
    args = ["train", "--data", f"nnunet:{raw}", "--init-from", str(plans), "--model",
            "configuration=3d_fullres", "--steps-per-epoch", "3", "--val-samples", "4",
            "--workdir", str(run), "--no-progress"]
    assert main([*args, "--epochs", "2", "--stop-at-step", "3"]) == 0
    assert main([*args, "--epochs", "2"]) == 0  # resumes at step 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in records)
    cached = list((tmp_path / "cache").glob("*/*.npy"))
    assert len(cached) == 10  # 5 cases: data and label map, preprocessed once for both runs
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(raw / "imagesTs"), "-o", str(out)]) == 0
    for case in ("test_000", "test_001"):
        source, result = (nib.load(str(p)) for p in (raw / "imagesTs" / f"{case}_0000.nii.gz",
                                                       out / f"{case}.nii.gz"))
        np.testing.assert_allclose(result.affine, source.affine, atol=1e-6)
        assert result.shape == source.shape and set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}
