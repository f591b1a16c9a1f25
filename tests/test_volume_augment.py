"""unet_jax.data.volume_augment against numpy slicing, known geometry and nnU-Net's own code
(nnunetv2's trainer configuration and get_patch_size, batchgeneratorsv2's SpatialTransform and
intensity helpers; imported lazily, skipped where absent)."""

import math

import numpy as np
import pytest

from unet_jax.data import volume_augment as va
from unet_jax.data.volume_augment import VolumeAugmentation

SPATIAL_OFF = dict(p_rotation=0.0, p_scaling=0.0)
INTENSITY_OFF = dict(p_noise=0.0, p_blur=0.0, p_brightness=0.0, p_contrast=0.0, p_low_resolution=0.0,
                     p_gamma_inverted=0.0, p_gamma=0.0, p_mirror_per_axis=0.0)
INTENSITY_ALWAYS = dict(p_noise=1.0, p_blur=1.0, blur_p_per_channel=1.0, p_brightness=1.0, p_contrast=1.0,
                        p_low_resolution=1.0, low_resolution_p_per_channel=1.0, p_gamma_inverted=1.0,
                        p_gamma=1.0)


def _case(shape, channels=2, seed=0, seg_dtype=np.int16):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((channels, *shape), dtype=np.float32)
    seg = rng.integers(-1, 3, shape).astype(seg_dtype)
    return image, seg


def _reference_crop(array, lower, size, fill, leading=0):
    """array[..., lower:lower + size] by padding the whole array first."""
    pad = [(0, 0)] * leading + [(max(0, -lo), max(0, lo + s - n))
                                for lo, s, n in zip(lower, size, array.shape[leading:])]
    padded = np.pad(array, pad, constant_values=fill)
    start = [max(0, -lo) + lo for lo in lower]
    return padded[(slice(None),) * leading + tuple(slice(a, a + s) for a, s in zip(start, size))]


@pytest.fixture(scope="module")
def torch_and_bg():
    torch = pytest.importorskip("torch")
    pytest.importorskip("batchgeneratorsv2")
    return torch


# ---------------------------------------------------------------- spatial


@pytest.mark.parametrize("lower", [(3, 4, 2), (-5, -3, 0), (15, 10, 9), (-20, 40, 3)])
def test_without_rotation_or_scaling_the_patch_is_an_exact_padded_crop(tmp_path, lower):
    image, seg = _case((20, 22, 18), seg_dtype=np.uint8)
    seg[seg == 255] = 1
    path = tmp_path / "case.npy"
    np.save(path, image)
    memmap = np.load(path, mmap_mode="r")  # read-only memmap of the whole case
    aug = VolumeAugmentation.for_patch((8, 10, 12), **SPATIAL_OFF)
    out_image, out_seg = aug.spatial(memmap, seg, lower, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, _reference_crop(image, lower, aug.patch_size, 0.0, leading=1))
    np.testing.assert_array_equal(out_seg, _reference_crop(seg.astype(np.int16), lower, aug.patch_size, -1))
    assert out_image.dtype == np.float32 and out_image.shape == (2, 8, 10, 12)
    assert out_seg.dtype == np.int16  # uint8 widened so -1 fits


def test_identity_matrix_is_the_exact_crop_too():
    image, seg = _case((16, 17))
    aug = VolumeAugmentation.for_patch((9, 8))
    crop = aug.resample(image, seg, (-2, 5), None)
    same = aug.resample(image, seg, (-2, 5), np.eye(2))
    np.testing.assert_array_equal(crop[0], same[0])
    np.testing.assert_array_equal(crop[1], same[1])


def test_same_seed_same_patch_other_seed_differs():
    image, seg = _case((30, 32, 28))
    aug = VolumeAugmentation.for_patch((12, 16, 14), p_rotation=1.0, p_scaling=1.0, p_noise=1.0)

    def sample(seed):
        rng = np.random.default_rng(seed)
        return aug.intensity_and_mirror(*aug.spatial(image, seg, (5, 6, 4), rng), rng)

    first, again, other = sample(7), sample(7), sample(8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_sampled_matrices_follow_nnunet_parameters():
    rng = np.random.default_rng(0)
    rotate = VolumeAugmentation.for_patch((24, 40, 48), p_rotation=1.0, p_scaling=0.0)
    for _ in range(20):
        m = rotate.sample_spatial_matrix(rng)
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(m) == pytest.approx(1.0)
        # each axis turned by at most 30 degrees: the composed rotation by at most 3 * 30
        assert math.acos(min(1.0, (np.trace(m) - 1) / 2)) <= 3 * math.radians(30) + 1e-9
    scale = VolumeAugmentation.for_patch((24, 40, 48), p_rotation=0.0, p_scaling=1.0, scaling=(1.3, 1.4))
    for _ in range(20):
        m = scale.sample_spatial_matrix(rng)
        # one factor for all axes, used as drawn: above 1 samples a larger region (zooms out)
        assert np.allclose(m, m[0, 0] * np.eye(3)) and 1.3 <= m[0, 0] <= 1.4
    dummy = VolumeAugmentation.for_patch((8, 128, 128), p_rotation=1.0, p_scaling=1.0)
    assert dummy.dummy_2d
    for _ in range(20):
        m = dummy.sample_spatial_matrix(rng)
        np.testing.assert_array_equal(m[0], [1, 0, 0])  # axis 0 neither turned nor scaled
        np.testing.assert_array_equal(m[:, 0], [1, 0, 0])
    off = VolumeAugmentation.for_patch((24, 40, 48), **SPATIAL_OFF)
    assert off.sample_spatial_matrix(rng) is None


def test_quarter_turn_maps_a_marked_voxel_where_expected():
    shape, patch, lower = (21, 23, 25), (9, 11, 13), (6, 6, 6)
    centre = np.array(lower) + (np.array(patch) - 1) // 2  # odd sizes: an integer voxel
    image = np.zeros((1, *shape), np.float32)
    seg = np.zeros(shape, np.int16)
    marked = tuple(centre + (0, 3, 0))
    image[(0, *marked)] = 5.0
    seg[marked] = 3
    quarter_turn = va._rotation_matrix_3d((math.pi / 2, 0.0, 0.0))  # turns the plane of axes 1 and 2
    out_image, out_seg = VolumeAugmentation.for_patch(patch).resample(image, seg, lower, quarter_turn)
    # output voxel i reads centre + M (i - patch centre), so the mark lands at M^T (0, 3, 0) = (0, 0, -3)
    expected = tuple(np.array(patch) // 2 + (0, 0, -3))
    assert list(zip(*np.nonzero(out_seg == 3))) == [expected]
    assert out_image[(0, *expected)] == pytest.approx(5.0, abs=1e-6)
    assert np.abs(out_image).sum() == pytest.approx(5.0, abs=1e-5)


def test_rotation_keeps_a_centred_blob_centred_and_invents_no_labels():
    shape = (40, 40, 40)
    grid = np.indices(shape) - 19.5
    seg = np.where((np.abs(grid) <= 6).all(axis=0), 2, 1).astype(np.int16)
    seg[:, :, :3] = -1  # outside the non-zero region
    image = np.where(seg == 2, 10.0, 1.0)[None].astype(np.float32)
    aug = VolumeAugmentation.for_patch((24, 24, 24), p_rotation=1.0, rotation=0.3, p_scaling=0.0)
    rng = np.random.default_rng(3)
    for _ in range(5):
        out_image, out_seg = aug.spatial(image, seg, (8, 8, 8), rng)
        assert set(np.unique(out_seg)) <= {-1, 1, 2}
        blob = np.argwhere(out_seg == 2)
        np.testing.assert_allclose(blob.mean(axis=0), 11.5, atol=0.6)
        assert 0.8 * 12**3 < len(blob) < 1.2 * 12**3  # a rotation keeps the volume (a 12^3 cube)
        assert out_image.min() >= 0.0 and out_image.max() <= 10.0 + 1e-5


def test_scaling_above_one_zooms_out_as_in_nnunet():
    shape = (40, 40, 40)
    grid = np.indices(shape) - 19.5
    seg = (np.abs(grid) <= 6).all(axis=0).astype(np.int16)
    image = seg[None].astype(np.float32)
    aug = VolumeAugmentation.for_patch((24, 24, 24))
    plain = (aug.resample(image, seg, (8, 8, 8), np.eye(3) * 1.0001)[1] == 1).sum()
    zoomed_out = (aug.resample(image, seg, (8, 8, 8), np.eye(3) * 2.0)[1] == 1).sum()
    assert zoomed_out == pytest.approx(plain / 8, rel=0.35)


def test_far_outside_the_case_is_all_padding():
    image, seg = _case((10, 12))
    aug = VolumeAugmentation.for_patch((6, 6))
    out_image, out_seg = aug.resample(image, seg, (40, -50), va._rotation_matrix_2d(0.4) * 1.2)
    assert not out_image.any() and (out_seg == -1).all()


def test_rotation_matrices_are_nnunets_affines(torch_and_bg):
    from batchgeneratorsv2.transforms.spatial.spatial import create_affine_matrix_2d, create_affine_matrix_3d

    angles, factor = (0.3, -0.5, 0.9), 1.2
    np.testing.assert_allclose(va._rotation_matrix_3d(angles) * factor,
                               create_affine_matrix_3d(angles, [factor] * 3), atol=1e-15)
    np.testing.assert_allclose(va._rotation_matrix_2d(0.9) * factor,
                               create_affine_matrix_2d(0.9, [factor] * 2), atol=1e-15)


@pytest.mark.parametrize("case", ["3d", "2d", "dummy_2d"])
def test_rotation_and_scaling_match_nnunet_spatial_transform(torch_and_bg, case):
    """batchgeneratorsv2's SpatialTransform (mode_seg='nearest', padding -1) on the whole case, centred
    on it, against resample with the same matrix."""
    torch = torch_and_bg
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform

    shape, patch, angles, factor = {
        "3d": ((40, 44, 36), (24, 28, 20), (0.3, -0.2, 0.4), 1.17),
        "2d": ((50, 46), (30, 26), (0.0, 0.7), 1.31),
        "dummy_2d": ((6, 50, 46), (6, 30, 26), (0.0, -0.9), 0.83),
    }[case]
    image, seg = _case(shape, channels=2, seed=1)
    spatial_patch = patch[1:] if case == "dummy_2d" else patch
    transform = SpatialTransform(spatial_patch, 0, False, p_rotation=1,
                                 rotation=lambda image, dim: angles[dim],
                                 p_scaling=1, scaling=lambda image, dim: factor,
                                 p_synchronize_scaling_across_axes=1, mode_seg="nearest",
                                 border_mode_seg="constant", padding_value_seg=-1)
    if case == "dummy_2d":
        transform = ComposeTransforms([Convert3DTo2DTransform(), transform, Convert2DTo3DTransform()])
    theirs = transform(image=torch.from_numpy(image.copy()), segmentation=torch.from_numpy(seg[None].copy()))

    if case == "3d":
        matrix = va._rotation_matrix_3d(angles) * factor
    else:
        matrix = va._rotation_matrix_2d(angles[-1]) * factor
        if case == "dummy_2d":
            matrix = np.block([[np.eye(1), np.zeros((1, 2))], [np.zeros((2, 1)), matrix]])
    aug = VolumeAugmentation.for_patch(patch)
    assert aug.dummy_2d == (case == "dummy_2d")
    lower = [(s - p) // 2 for s, p in zip(shape, patch)]
    ours = aug.resample(image, seg, lower, matrix)
    np.testing.assert_allclose(ours[0], theirs["image"].numpy(), atol=5e-5)
    np.testing.assert_array_equal(ours[1], theirs["segmentation"].numpy()[0])
    assert (ours[1] == -1).mean() > 0.2  # the comparison covers padding too


# ---------------------------------------------------------------- intensity and mirroring


@pytest.mark.parametrize("patch", [(12, 16, 14), (20, 24), (4, 24, 20)])
def test_intensity_keeps_shape_dtype_finiteness_and_the_input(patch):
    image, seg = _case(patch, channels=2, seed=2)
    image64 = image.astype(np.float64)
    before = image64.copy(), seg.copy()
    aug = VolumeAugmentation.for_patch(patch, **INTENSITY_ALWAYS)
    out_image, out_seg = aug.intensity_and_mirror(image64, seg, np.random.default_rng(0))
    assert out_image.shape == image.shape and out_image.dtype == np.float32
    assert np.isfinite(out_image).all()
    assert not np.allclose(out_image, image, atol=1e-3)
    assert out_seg.shape == seg.shape and out_seg.dtype == seg.dtype
    np.testing.assert_array_equal(before[0], image64)
    np.testing.assert_array_equal(before[1], seg)


def test_intensity_leaves_seg_alone_except_minus_one_to_zero():
    image, seg = _case((12, 16, 14), seed=4)
    assert (seg == -1).any()
    aug = VolumeAugmentation.for_patch((12, 16, 14), p_mirror_per_axis=0.0, **INTENSITY_ALWAYS)
    _, out_seg = aug.intensity_and_mirror(image, seg, np.random.default_rng(0))
    np.testing.assert_array_equal(out_seg, np.where(seg == -1, 0, seg))


def test_mirroring_flips_image_and_seg_together_then_masks():
    image, seg = _case((6, 7, 8), seed=5)
    aug = VolumeAugmentation.for_patch((6, 7, 8), **{**INTENSITY_OFF, "p_mirror_per_axis": 1.0})
    out_image, out_seg = aug.intensity_and_mirror(image, seg, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image[:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(out_seg, np.where(seg == -1, 0, seg)[::-1, ::-1, ::-1])

    only_axis_1 = VolumeAugmentation(aug.patch_size, aug.rotation, False, (1,), p_mirror_per_axis=1.0,
                                     mask_channels=(1,), **{k: v for k, v in INTENSITY_OFF.items()
                                                            if k != "p_mirror_per_axis"})
    out_image, out_seg = only_axis_1.intensity_and_mirror(image, seg, np.random.default_rng(0))
    flipped, outside = image[:, :, ::-1], (seg < 0)[:, ::-1]
    np.testing.assert_array_equal(out_image[0], flipped[0])  # channel 0 not masked
    np.testing.assert_array_equal(out_image[1], np.where(outside, 0, flipped[1]))
    np.testing.assert_array_equal(out_seg, np.where(seg == -1, 0, seg)[:, ::-1])


def test_mirror_probability_per_axis_is_about_a_half():
    image, seg = _case((4, 5, 6), channels=1, seed=6)
    aug = VolumeAugmentation.for_patch((4, 5, 6), **INTENSITY_OFF | {"p_mirror_per_axis": 0.5,
                                                                     "mirror_axes": (2,)})
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(200):
        out, _ = aug.intensity_and_mirror(image, seg, rng)
        flips += np.array_equal(out, image[:, :, :, ::-1])
    assert 70 < flips < 130


def test_bg_contrast_draws_below_one_half_of_the_time():
    rng = np.random.default_rng(0)
    draws = np.array([va._bg_contrast(rng, (0.75, 1.25)) for _ in range(2000)])
    assert ((draws >= 0.75) & (draws <= 1.25)).all()
    assert 0.45 < (draws < 1).mean() < 0.55
    assert (np.array([va._bg_contrast(rng, (1.1, 1.3)) for _ in range(50)]) >= 1.1).all()


def test_contrast_preserves_range_and_brightness_scales():
    image, seg = _case((10, 12, 14), channels=2, seed=7)
    aug = VolumeAugmentation.for_patch((10, 12, 14), **INTENSITY_OFF | {"p_contrast": 1.0})
    out, _ = aug.intensity_and_mirror(image, seg, np.random.default_rng(0))
    for c in range(2):
        assert out[c].min() >= image[c].min() and out[c].max() <= image[c].max()
        assert not np.array_equal(out[c], image[c])
    bright = VolumeAugmentation.for_patch((10, 12, 14), **INTENSITY_OFF | {"p_brightness": 1.0})
    out, _ = bright.intensity_and_mirror(image, seg, np.random.default_rng(0))
    ratio = out.reshape(2, -1) / image.reshape(2, -1)
    assert np.allclose(ratio, ratio[:, :1], rtol=1e-5) and ((ratio >= 0.75) & (ratio <= 1.25)).all()


def test_low_resolution_leaves_axis_zero_alone_with_dummy_2d():
    profile = np.linspace(-1, 1, 8, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(profile, (8, 32, 32))[None].copy()
    seg = np.zeros((8, 32, 32), np.int16)
    only_low_res = INTENSITY_OFF | {"p_low_resolution": 1.0, "low_resolution_p_per_channel": 1.0,
                                    "low_resolution_scale": (0.5, 0.5)}
    dummy = VolumeAugmentation.for_patch((8, 32, 32), **only_low_res)
    assert dummy.dummy_2d
    out, _ = dummy.intensity_and_mirror(image, seg, np.random.default_rng(0))
    np.testing.assert_allclose(out, image, atol=1e-6)
    full = VolumeAugmentation.for_patch((8, 32, 32), **only_low_res | {"dummy_2d": False})
    out, _ = full.intensity_and_mirror(image, seg, np.random.default_rng(0))
    assert np.abs(out - image).max() > 0.05


def test_intensity_helpers_match_batchgeneratorsv2(torch_and_bg):
    torch = torch_and_bg
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import blur_dimension
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform

    x = np.random.default_rng(0).standard_normal((1, 13, 20, 17)).astype(np.float32)
    for zoom in (0.5, 0.63, 0.77, 0.99):
        low_resolution = SimulateLowResolutionTransform(zoom, False, True, None, None, 1)
        theirs = low_resolution(image=torch.from_numpy(x.copy()))
        np.testing.assert_allclose(va._simulate_low_resolution(x[0], [zoom] * 3), theirs["image"][0].numpy(),
                                   atol=1e-5)
    for sigmas in ((0.5, 0.66, 0.83), (1.0, 0.55, 0.74)):
        theirs = torch.from_numpy(x.copy())
        for axis, sigma in enumerate(sigmas):
            theirs = blur_dimension(theirs, sigma, axis)
        np.testing.assert_allclose(va._blur_channel(x[0], sigmas), theirs[0].numpy(), atol=1e-5)
    for gamma in (0.7, 1.3):
        for invert in (False, True):
            theirs = GammaTransform(lambda *a, g=gamma, **k: g, float(invert), False, 1, 1)(
                image=torch.from_numpy(x.copy()))
            np.testing.assert_allclose(va._gamma(x[0], gamma, invert), theirs["image"][0].numpy(), atol=1e-5)


# ---------------------------------------------------------------- configuration


NNUNET_PATCHES = [(40, 48), (40, 200), (24, 40, 48), (8, 128, 128)]


@pytest.mark.parametrize("patch", NNUNET_PATCHES)
def test_for_patch_matches_nnunet_trainer(patch):
    pytest.importorskip("torch")
    trainer_module = pytest.importorskip("nnunetv2.training.nnUNetTrainer.nnUNetTrainer")
    from types import SimpleNamespace

    fake_trainer = SimpleNamespace(configuration_manager=SimpleNamespace(patch_size=patch),
                                   print_to_log_file=lambda *args, **kwargs: None)
    rotation, dummy_2d, initial, mirror_axes = \
        trainer_module.nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(fake_trainer)
    aug = VolumeAugmentation.for_patch(patch)
    assert aug.rotation == pytest.approx(max(abs(r) for r in rotation))
    assert aug.dummy_2d == dummy_2d
    assert aug.mirror_axes == tuple(mirror_axes)
    assert aug.initial_patch_size() == tuple(int(i) for i in initial)


def test_for_patch_choices_spelled_out():
    assert VolumeAugmentation.for_patch((40, 48)).rotation == pytest.approx(math.pi)
    assert VolumeAugmentation.for_patch((40, 200)).rotation == pytest.approx(math.radians(15))
    iso = VolumeAugmentation.for_patch((24, 40, 48))
    assert iso.rotation == pytest.approx(math.radians(30)) and not iso.dummy_2d
    aniso = VolumeAugmentation.for_patch((8, 128, 128))
    assert aniso.dummy_2d and aniso.rotation == pytest.approx(math.pi) and aniso.mirror_axes == (0, 1, 2)
    assert aniso.initial_patch_size()[0] == 8


@pytest.mark.parametrize("patch", [(64, 64), (37, 200), (128, 128, 128), (20, 192, 160), (56, 40, 64)])
def test_initial_patch_size_matches_get_patch_size(patch):
    module = pytest.importorskip("nnunetv2.training.data_augmentation.compute_initial_patch_size")
    aug = VolumeAugmentation.for_patch(patch)
    span = (-aug.rotation, aug.rotation)
    expected = [int(i) for i in module.get_patch_size(patch, span, span, span, (0.85, 1.25))]
    if aug.dummy_2d:
        expected[0] = patch[0]
    assert aug.initial_patch_size() == tuple(expected)


# ---------------------------------------------------------------- errors


def test_wrong_ranks_and_shapes_raise_value_errors_naming_the_expectation():
    aug = VolumeAugmentation.for_patch((8, 8, 8))
    image, seg = _case((10, 10, 10))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"\(C, \*spatial\) with 3 spatial axes"):
        aug.spatial(image[0], seg, (0, 0, 0), rng)
    with pytest.raises(ValueError, match="spatial shape"):
        aug.spatial(image, seg[None], (0, 0, 0), rng)
    with pytest.raises(ValueError, match="integer label map"):
        aug.spatial(image, seg.astype(np.float32), (0, 0, 0), rng)
    with pytest.raises(ValueError, match="3 entries"):
        aug.spatial(image, seg, (0, 0), rng)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        aug.resample(image, seg, (0, 0, 0), np.eye(2) * 2)
    with pytest.raises(ValueError, match="3 spatial axes"):
        aug.intensity_and_mirror(image[0], seg, rng)
    with pytest.raises(ValueError, match="spatial shape"):
        aug.intensity_and_mirror(image, seg[:5], rng)
    with pytest.raises(ValueError, match="mask_channels"):
        VolumeAugmentation.for_patch((8, 8, 8), mask_channels=(2,)).intensity_and_mirror(image, seg, rng)
    with pytest.raises(ValueError, match="2 or 3 spatial axes"):
        VolumeAugmentation.for_patch((8, 8, 8, 8))
    with pytest.raises(ValueError, match="2 or 3 positive sizes"):
        VolumeAugmentation((8, 0), 0.1, False, ())
    with pytest.raises(ValueError, match="dummy_2d needs a 3-D"):
        VolumeAugmentation((8, 8), 0.1, True, ())
    with pytest.raises(ValueError, match="mirror_axes"):
        VolumeAugmentation((8, 8), 0.1, False, (2,))
    with pytest.raises(ValueError, match="p_blur must be a probability"):
        VolumeAugmentation.for_patch((8, 8), p_blur=1.5)
    with pytest.raises(ValueError, match="scaling must be a"):
        VolumeAugmentation.for_patch((8, 8), scaling=(1.4, 0.7))
