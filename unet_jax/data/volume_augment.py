"""nnU-Net's 3-D (and 2-D) training augmentation, on the host in numpy/scipy.

Reproduces, with its own code, the transforms of nnunetv2 2.8.1
``nnUNetTrainer.get_training_transforms`` (batchgeneratorsv2 transforms) for a plain
(non-cascaded, label-based) configuration, in nnU-Net's order:

  1. ``SpatialTransform``: rotation (p 0.2) and one scale factor for all axes (p 0.2,
     ``p_synchronize_scaling_across_axes=1``) about the patch centre, no elastic deformation;
     with dummy 2-D augmentation (``Convert3DTo2DTransform``) only in-plane, axes 1 and 2.
     Without rotation or scaling the patch is an exact crop (nnU-Net's ``crop_tensor``).
  2. ``GaussianNoiseTransform`` (p 0.1): one standard deviation U(0, 0.1) for all channels
     (nnU-Net calls the range ``noise_variance`` but batchgeneratorsv2 uses it as the std).
  3. ``GaussianBlurTransform`` (p 0.2): per channel with p 0.5, sigma U(0.5, 1) per axis,
     nnU-Net's kernel size (odd, about 6 sigma) and reflect padding.
  4. ``MultiplicativeBrightnessTransform`` (p 0.15): per channel factor ``BGContrast((0.75, 1.25))``.
  5. ``ContrastTransform`` (p 0.15): per channel ``BGContrast((0.75, 1.25))`` about the channel
     mean, clipped to the channel's former range (``preserve_range=True``).
  6. ``SimulateLowResolutionTransform`` (p 0.25): per channel with p 0.5, one zoom U(0.5, 1) for
     all axes (axis 0 kept with dummy 2-D), down by torch's ``nearest-exact``, back up linearly
     (``align_corners=False``); both written out here so they match torch index for index.
  7. ``GammaTransform`` with inversion (p 0.1) and without (p 0.3): gamma ``BGContrast((0.7, 1.5))``
     per channel on the channel rescaled to [0, 1], then mean and (unbiased) std restored.
  8. ``MirrorTransform``: each allowed axis flipped with p 0.5, image and segmentation together.
  9. ``MaskImageTransform`` (only when some channel was normalised inside the non-zero mask,
     ``mask_channels``): those channels set to 0 where the segmentation is < 0.
 10. ``RemoveLabelTansform(-1, 0)``.

``BGContrast`` draws below 1 half of the time (U(low, 1)) and above 1 otherwise (U(1, high)).
``VolumeAugmentation.for_patch`` is nnU-Net's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``
and ``initial_patch_size`` its ``get_patch_size`` (rotation bound 90 degrees, scale 0.85, the
quirks of its corner rotation kept so the sizes agree to the voxel).

Not reproduced, or done differently:

- Cascade transforms (one-hot previous stage, binary operators, connected-component removal),
  region conversion and deep-supervision downsampling of the target: left to the caller.
- Where nnU-Net samples inside an already cropped ``initial_patch_size`` box padded with 0 / -1,
  ``spatial`` samples straight from the case (reading only the bounding box of the sample points),
  so a strongly zoomed-out or rotated patch sees real data where nnU-Net would see padding. Outside
  the case the image is 0 and the segmentation -1 as in nnU-Net. The patch is placed by its own
  lower corner: a sampler that picks nnU-Net's enlarged box at ``L`` (``get_bbox`` with
  ``initial_patch_size``) passes ``L + (initial_patch_size - patch_size) // 2``; nnU-Net itself
  centres on the enlarged box's centre, half a voxel off that when the two sizes differ in parity.
- Image: linear interpolation (order 1, ``scipy.ndimage.affine_transform``) with zeros beyond the
  case, blended over the last half voxel: the same as nnU-Net's ``grid_sample(mode='bilinear',
  padding_mode='zeros', align_corners=False)``. Segmentation: nearest neighbour (ties rounded up,
  torch rounds them to even) with -1 beyond the case. nnU-Net 2.8.1's default ``mode_seg='bilinear'``
  instead interpolates every label's one-hot indicator linearly and takes the arg-max; that costs
  one interpolation per label and differs from nearest only next to label boundaries, so nearest
  is used here (nnU-Net's ``mode_seg='nearest'``).
- Random numbers come from the ``numpy.random.Generator`` passed in (nnU-Net mixes numpy's and
  torch's global generators), so one seed fixes one sample; the draws are nnU-Net's distributions,
  not its stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

ANISO_THRESHOLD = 3  # nnunetv2.configuration.ANISO_THRESHOLD
INITIAL_PATCH_MIN_SCALE = 0.85  # the scale nnU-Net's get_patch_size divides by (its old scale range)
_EPS = 1e-7  # nnU-Net's GammaTransform clamp


def _radians(degrees: float) -> float:
    """Degrees to radians written as nnU-Net writes it (degrees / 360 * 2 pi), to the last bit."""
    return degrees / 360.0 * 2.0 * np.pi


def _bg_contrast(rng: np.random.Generator, value_range: tuple[float, float]) -> float:
    """batchgeneratorsv2 ``BGContrast``: U(low, 1) half of the time (when low < 1), else
    U(max(low, 1), high)."""
    low, high = value_range
    if rng.random() < 0.5 and low < 1:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(max(low, 1.0), high))


def _uniform(rng: np.random.Generator, value_range: tuple[float, float]) -> float:
    """batchgeneratorsv2 ``sample_scalar`` of a (low, high) tuple."""
    low, high = value_range
    return float(low) if low == high else float(rng.uniform(low, high))


# ---------------------------------------------------------------- geometry


def _rotation_matrix_3d(angles: Sequence[float]) -> np.ndarray:
    """batchgeneratorsv2 ``create_affine_matrix_3d`` without the scale: Rz @ Ry @ Rx, where the
    angle for axis k turns the plane of the other two axes (axis order as the array's)."""
    a0, a1, a2 = angles
    c0, s0, c1, s1, c2, s2 = np.cos(a0), np.sin(a0), np.cos(a1), np.sin(a1), np.cos(a2), np.sin(a2)
    rx = np.array([[1, 0, 0], [0, c0, -s0], [0, s0, c0]])
    ry = np.array([[c1, 0, s1], [0, 1, 0], [-s1, 0, c1]])
    rz = np.array([[c2, -s2, 0], [s2, c2, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rotation_matrix_2d(angle: float) -> np.ndarray:
    """batchgeneratorsv2 ``create_affine_matrix_2d`` without the scale."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _enlarged_patch_size(patch_size: Sequence[int], max_angle: float,
                         min_scale: float = INITIAL_PATCH_MIN_SCALE) -> list[int]:
    """nnU-Net's ``get_patch_size``: the patch's corner vector turned by the largest angle about each
    axis in turn (angle capped at 90 degrees), the largest |component| per axis kept, divided by
    ``min_scale`` and truncated. It turns the row vector (v @ R), as batchgenerators'
    ``rotate_coords_3d`` does; the result is kept even where it is not the exact rotated extent."""
    angle = min(_radians(90), abs(max_angle))
    corner = np.array(patch_size, dtype=float)
    extent = corner.copy()
    c, s = np.cos(angle), np.sin(angle)
    if len(corner) == 3:
        turns = (np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
                 np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
                 np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]))
    else:
        turns = (np.array([[c, -s], [s, c]]),)
    for turn in turns:
        extent = np.maximum(extent, np.abs(corner @ turn))
    return [int(v) for v in extent / min_scale]


def _box_of_samples(matrix: np.ndarray, centre: np.ndarray, patch_size: Sequence[int],
                    volume_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) per axis of the voxels a linear sample over the patch reads, widened by one voxel of
    padding where it leaves the volume and clipped to [-1, n + 1). The sample points are an affine
    image of the patch grid, so their extremes sit at the patch's corners."""
    half = (np.asarray(patch_size, dtype=float) - 1) / 2
    dim = len(patch_size)
    signs = np.array(np.meshgrid(*[(-1.0, 1.0)] * dim, indexing="ij")).reshape(dim, -1)
    corners = centre[:, None] + matrix @ (signs * half[:, None])
    lo = np.floor(corners.min(axis=1)).astype(int)
    hi = np.floor(corners.max(axis=1)).astype(int) + 2
    n = np.asarray(volume_shape)
    lo = np.minimum(np.maximum(lo, -1), n)
    hi = np.maximum(np.minimum(hi, n + 1), lo + 1)
    return lo, hi


def _read_padded(array: np.ndarray, lo: Sequence[int], hi: Sequence[int], fill, dtype,
                 leading: int = 0) -> np.ndarray:
    """``array[..., lo:hi]`` over the trailing spatial axes with ``fill`` where [lo, hi) leaves the
    array; ``leading`` axes (channels) are taken whole. Reads only the overlap, so a memmap of a whole
    case is never loaded."""
    spatial = array.shape[leading:]
    out = np.full(array.shape[:leading] + tuple(int(h - lo_) for lo_, h in zip(lo, hi)), fill, dtype=dtype)
    src, dst = [], []
    for lo_k, hi_k, n_k in zip(lo, hi, spatial):
        a, b = max(int(lo_k), 0), min(int(hi_k), n_k)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(lo_k), b - int(lo_k)))
    lead = (slice(None),) * leading
    out[lead + tuple(dst)] = array[lead + tuple(src)]
    return out


# ---------------------------------------------------------------- intensity helpers


def _round_to_nearest_odd(n: float) -> int:
    """batchgeneratorsv2 ``_round_to_nearest_odd`` (Python's round, then towards n to the odd neighbour)."""
    rounded = round(n)
    if rounded % 2 == 1:
        return rounded
    return rounded + 1 if n - rounded >= 0 else rounded - 1


def _blur_radius(sigma: float, truncate: float = 6.0) -> int:
    """Half the kernel width nnU-Net's ``blur_dimension`` uses (odd kernel of about 6 sigma + 0.5)."""
    return (_round_to_nearest_odd(sigma * truncate + 0.5) - 1) // 2


def _blur_channel(channel: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """batchgeneratorsv2 ``blur_dimension`` over every axis in turn: a Gaussian of nnU-Net's kernel width
    per axis, torch's reflect padding (scipy's "mirror": the edge voxel not repeated)."""
    return ndimage.gaussian_filter(channel, sigmas, mode="mirror", radius=[_blur_radius(s) for s in sigmas])


def _nearest_exact_indices(n_in: int, n_out: int) -> np.ndarray:
    """torch ``interpolate(mode='nearest-exact')`` source index per output index along one axis."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)


def _resize_linear_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """torch ``interpolate(mode='linear', align_corners=False)`` along one axis (separable, so the
    (bi/tri)linear resize is this once per axis): source ``(i + 0.5) * in / out - 0.5`` clamped at 0,
    upper neighbour clamped to the last index."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = n_out
    w1 = (src - i0).astype(np.float32).reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - w1) + np.take(x, i1, axis=axis) * w1


def _simulate_low_resolution(channel: np.ndarray, scale: Sequence[float]) -> np.ndarray:
    """batchgeneratorsv2 ``SimulateLowResolutionTransform`` on one channel: down to ``round(n * s)``
    per axis by nearest-exact, back to the original shape by linear interpolation."""
    small_shape = [max(1, round(n * s)) for n, s in zip(channel.shape, scale)]
    small = channel[np.ix_(*[_nearest_exact_indices(n, m) for n, m in zip(channel.shape, small_shape)])]
    for axis, n in enumerate(channel.shape):
        small = _resize_linear_axis(small, axis, n)
    return small


def _gamma(channel: np.ndarray, gamma: float, invert: bool) -> np.ndarray:
    """batchgeneratorsv2 ``GammaTransform`` on one channel with ``p_retain_stats=1``: (optionally
    negated) channel rescaled to [0, 1], raised to ``gamma``, scaled back, then its mean and unbiased
    std (torch's ``std``) restored; negated back."""
    x = -channel if invert else channel
    mean, std = x.mean(), x.std(ddof=1)
    low, high = x.min(), x.max()
    span = high - low
    x = ((x - low) / max(span, _EPS)) ** np.float32(gamma) * span + low
    x = (x - x.mean()) * (std / max(x.std(ddof=1), _EPS)) + mean
    return -x if invert else x


# ---------------------------------------------------------------- the augmentation

_PROBABILITY_FIELDS = ("p_rotation", "p_scaling", "p_noise", "p_blur", "blur_p_per_channel", "p_brightness",
                       "p_contrast", "p_low_resolution", "low_resolution_p_per_channel", "p_gamma_inverted",
                       "p_gamma", "p_mirror_per_axis")
_RANGE_FIELDS = ("scaling", "noise_std", "blur_sigma", "brightness_range", "contrast_range",
                 "low_resolution_scale", "gamma_range")


@dataclasses.dataclass(frozen=True)
class VolumeAugmentation:
    """nnU-Net's defaults for a patch size, built by ``for_patch(patch_size)``.

    ``spatial`` cuts one (rotated / scaled) patch out of a case; ``intensity_and_mirror`` runs the
    rest of nnU-Net's training transforms on it. Each probability / range is nnU-Net 2.8.1's.
    """

    patch_size: tuple[int, ...]  # the final patch (2 or 3 spatial axes)
    rotation: float  # max |angle| in radians
    dummy_2d: bool  # 3-D patch with a much shorter first axis: rotate / scale in-plane only
    mirror_axes: tuple[int, ...]
    p_rotation: float = 0.2
    p_scaling: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)  # > 1 samples a larger region: objects get smaller
    p_noise: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_p_per_channel: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    low_resolution_p_per_channel: float = 0.5
    low_resolution_scale: tuple[float, float] = (0.5, 1.0)
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_mirror_per_axis: float = 0.5
    mask_channels: tuple[int, ...] = ()  # channels normalised inside the non-zero mask (use_mask_for_norm)

    def __post_init__(self):
        patch = tuple(int(p) for p in self.patch_size)
        if len(patch) not in (2, 3) or min(patch) < 1:
            raise ValueError(f"patch_size must be 2 or 3 positive sizes, got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))
        object.__setattr__(self, "mask_channels", tuple(int(c) for c in self.mask_channels))
        if self.dummy_2d and len(patch) != 3:
            raise ValueError(f"dummy_2d needs a 3-D patch_size, got {patch}")
        if any(not 0 <= a < len(patch) for a in self.mirror_axes):
            raise ValueError(f"mirror_axes must be spatial axes in [0, {len(patch)}), got {self.mirror_axes}")
        for name in _PROBABILITY_FIELDS:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        for name in _RANGE_FIELDS:
            value = tuple(getattr(self, name))
            if len(value) != 2 or value[0] > value[1]:
                raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value}")

    # -------------------------------------------------------- configuration

    @classmethod
    def for_patch(cls, patch_size: Sequence[int], **overrides) -> VolumeAugmentation:
        """nnU-Net's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``: 2-D rotates by up to
        180 degrees (15 when one side is over 1.5 times the other), 3-D by 30 degrees, or in-plane by 180
        with dummy 2-D when the largest side is over ANISO_THRESHOLD times the first; every axis
        mirrors. ``overrides`` replace any other field."""
        patch = tuple(int(p) for p in patch_size)
        if len(patch) == 2:
            dummy_2d = False
            rotation = _radians(15.0) if max(patch) / min(patch) > 1.5 else _radians(180.0)
        elif len(patch) == 3:
            dummy_2d = max(patch) / patch[0] > ANISO_THRESHOLD
            rotation = _radians(180.0) if dummy_2d else _radians(30.0)
        else:
            raise ValueError(f"patch_size must have 2 or 3 spatial axes, got {patch_size!r}")
        fields = dict(patch_size=patch, rotation=rotation, dummy_2d=dummy_2d,
                      mirror_axes=tuple(range(len(patch))))
        fields.update(overrides)
        return cls(**fields)

    def initial_patch_size(self) -> tuple[int, ...]:
        """nnU-Net's enlarged sampling region (``get_patch_size`` with the scale 0.85 it still uses, the
        first axis unchanged with dummy 2-D): what the patch sampler pads for (``need_to_pad``)."""
        size = _enlarged_patch_size(self.patch_size, self.rotation)
        if self.dummy_2d:
            size[0] = self.patch_size[0]
        return tuple(size)

    # -------------------------------------------------------- spatial

    def sample_spatial_matrix(self, rng: np.random.Generator) -> np.ndarray | None:
        """The (d, d) matrix taking patch offsets to case offsets, or None for a plain crop.

        As SpatialTransform.get_parameters: rotate with p_rotation (an angle U(-rotation, rotation) per
        axis in 3-D, one in 2-D or in-plane with dummy 2-D), scale with p_scaling (one factor
        U(*scaling) for all (in-plane) axes); matrix = R @ S, so a factor above 1 samples a larger
        region and zooms out."""
        do_rotation = rng.random() < self.p_rotation
        do_scaling = rng.random() < self.p_scaling
        if not (do_rotation or do_scaling):
            return None
        plane_dims = 2 if (self.dummy_2d or len(self.patch_size) == 2) else 3
        if do_rotation:
            angles = rng.uniform(-self.rotation, self.rotation, size=plane_dims)
            rotation = _rotation_matrix_3d(angles) if plane_dims == 3 else _rotation_matrix_2d(angles[-1])
        else:
            rotation = np.eye(plane_dims)
        factor = _uniform(rng, self.scaling) if do_scaling else 1.0
        matrix = rotation * factor  # R @ (factor * I)
        if self.dummy_2d:
            full = np.eye(3)
            full[1:, 1:] = matrix
            matrix = full
        return matrix

    def spatial(self, image: np.ndarray, seg: np.ndarray, lower: Sequence[int],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One training patch of ``patch_size`` centred on the centre of [lower, lower + patch_size).

        image (C, *S) float (a read-only memmap is fine: only the needed box is read), seg (*S) integer
        (-1 outside the non-zero region), lower the patch's lower corner (may lie outside the case).
        Returns image (C, *patch_size) float32 and seg (*patch_size) in a signed integer type."""
        self._check_case(image, seg, lower)
        return self.resample(image, seg, lower, self.sample_spatial_matrix(rng))

    def resample(self, image: np.ndarray, seg: np.ndarray, lower: Sequence[int],
                 matrix: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``spatial`` with a given matrix (see ``sample_spatial_matrix``): sample point for patch voxel
        i is centre + matrix @ (i - (p - 1) / 2). None (or the identity) is an exact crop."""
        self._check_case(image, seg, lower)
        lower = np.asarray(lower, dtype=int)
        seg_dtype = np.promote_types(seg.dtype, np.int8)
        patch = self.patch_size
        if matrix is None or np.array_equal(matrix, np.eye(len(patch))):
            upper = lower + np.asarray(patch)
            image_patch = _read_padded(image, lower, upper, 0.0, np.float32, leading=1)
            seg_patch = _read_padded(seg, lower, upper, -1, seg_dtype)
            return image_patch, seg_patch
        matrix = np.asarray(matrix, dtype=float)
        if matrix.shape != (len(patch), len(patch)):
            raise ValueError(f"matrix must be ({len(patch)}, {len(patch)}), got {matrix.shape}")
        centre = lower + (np.asarray(patch, dtype=float) - 1) / 2
        lo, hi = _box_of_samples(matrix, centre, patch, seg.shape)
        # sample point of patch voxel i, in the box's coordinates: matrix @ i + offset (nnU-Net's centred
        # identity grid turned by its affine); scipy's affine_transform computes it per voxel itself
        offset = centre - lo - matrix @ ((np.asarray(patch, dtype=float) - 1) / 2)
        # the box carries one voxel of padding wherever it meets the case's edge, so clamping
        # ('nearest') at the box's edge reads 0 / -1 exactly where nnU-Net's zeros padding would
        image_box = _read_padded(image, lo, hi, 0.0, np.float32, leading=1)
        seg_box = _read_padded(seg, lo, hi, -1, seg_dtype)
        image_patch = np.empty((image.shape[0], *patch), dtype=np.float32)
        for c in range(image.shape[0]):
            ndimage.affine_transform(image_box[c], matrix, offset, output_shape=patch, output=image_patch[c],
                                     order=1, mode="nearest", prefilter=False)
        seg_patch = ndimage.affine_transform(seg_box, matrix, offset, output_shape=patch, order=0,
                                             mode="nearest", prefilter=False)
        return image_patch, seg_patch.astype(seg_dtype, copy=False)

    def _check_case(self, image, seg, lower) -> None:
        dim = len(self.patch_size)
        if np.ndim(image) != dim + 1:
            raise ValueError(f"image must be (C, *spatial) with {dim} spatial axes for patch_size "
                             f"{self.patch_size}, got shape {np.shape(image)}")
        if np.shape(seg) != tuple(image.shape[1:]):
            raise ValueError(f"seg must have the image's spatial shape {tuple(image.shape[1:])} "
                             f"(no channel axis), got {np.shape(seg)}")
        if np.asarray(seg).dtype.kind not in "iu":
            raise ValueError(f"seg must be an integer label map, got dtype {np.asarray(seg).dtype}")
        if len(lower) != dim:
            raise ValueError(f"lower must have {dim} entries (one per spatial axis), got {tuple(lower)}")

    # -------------------------------------------------------- intensity and mirroring

    def intensity_and_mirror(self, image: np.ndarray, seg: np.ndarray,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """nnU-Net's transforms after the spatial one, on a (C, *P) patch and its (*P) seg: noise, blur,
        brightness, contrast, low resolution, inverted gamma, gamma, mirroring, masking of
        ``mask_channels``, seg -1 -> 0. Returns new arrays (float32 image, seg of the input's dtype)."""
        dim = len(self.patch_size)
        if np.ndim(image) != dim + 1:
            raise ValueError(f"image must be a (C, *patch) patch with {dim} spatial axes, got shape "
                             f"{np.shape(image)}")
        if np.shape(seg) != tuple(np.shape(image)[1:]):
            raise ValueError(f"seg must have the image's spatial shape {tuple(np.shape(image)[1:])}, "
                             f"got {np.shape(seg)}")
        if any(not 0 <= c < image.shape[0] for c in self.mask_channels):
            raise ValueError(f"mask_channels {self.mask_channels} must index the image's "
                             f"{image.shape[0]} channels")
        image = np.array(image, dtype=np.float32, copy=True)
        seg = np.array(seg, copy=True)
        if rng.random() < self.p_noise:
            self._gaussian_noise(image, rng)
        if rng.random() < self.p_blur:
            self._gaussian_blur(image, rng)
        if rng.random() < self.p_brightness:
            self._brightness(image, rng)
        if rng.random() < self.p_contrast:
            self._contrast(image, rng)
        if rng.random() < self.p_low_resolution:
            self._low_resolution(image, rng)
        if rng.random() < self.p_gamma_inverted:
            self._gamma(image, rng, invert=True)
        if rng.random() < self.p_gamma:
            self._gamma(image, rng, invert=False)
        image, seg = self._mirror(image, seg, rng)
        if self.mask_channels:
            outside = seg < 0
            for c in self.mask_channels:
                image[c][outside] = 0
        seg[seg == -1] = 0
        return image, seg

    def _gaussian_noise(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """GaussianNoiseTransform(synchronize_channels=True): one std for all channels, fresh noise each."""
        std = _uniform(rng, self.noise_std)
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        noise *= np.float32(std)
        image += noise

    def _gaussian_blur(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """GaussianBlurTransform(synchronize_channels=False, synchronize_axes=False): per channel with
        blur_p_per_channel, a sigma per axis; reflect padding ('mirror' in scipy)."""
        chosen = np.flatnonzero(rng.random(image.shape[0]) < self.blur_p_per_channel)
        for c in chosen:
            sigmas = [_uniform(rng, self.blur_sigma) for _ in range(image.ndim - 1)]
            image[c] = _blur_channel(image[c], sigmas)

    def _brightness(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """MultiplicativeBrightnessTransform: a BGContrast factor per channel."""
        for c in range(image.shape[0]):
            image[c] *= np.float32(_bg_contrast(rng, self.brightness_range))

    def _contrast(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """ContrastTransform(preserve_range=True): per channel, (x - mean) * factor + mean, clipped to
        the channel's range before."""
        for c in range(image.shape[0]):
            factor = np.float32(_bg_contrast(rng, self.contrast_range))
            x = image[c]
            mean, low, high = x.mean(), x.min(), x.max()
            x -= mean
            x *= factor
            x += mean
            np.clip(x, low, high, out=x)

    def _low_resolution(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """SimulateLowResolutionTransform(synchronize_axes=True): per channel with
        low_resolution_p_per_channel, one zoom for all axes; axis 0 kept with dummy 2-D."""
        chosen = np.flatnonzero(rng.random(image.shape[0]) < self.low_resolution_p_per_channel)
        for c in chosen:
            zoom = _uniform(rng, self.low_resolution_scale)
            scale = [zoom] * (image.ndim - 1)
            if self.dummy_2d:
                scale[0] = 1.0
            image[c] = _simulate_low_resolution(image[c], scale)

    def _gamma(self, image: np.ndarray, rng: np.random.Generator, invert: bool) -> None:
        """GammaTransform(p_per_channel=1, p_retain_stats=1): a BGContrast gamma per channel."""
        for c in range(image.shape[0]):
            image[c] = _gamma(image[c], _bg_contrast(rng, self.gamma_range), invert)

    def _mirror(self, image: np.ndarray, seg: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """MirrorTransform: each of mirror_axes flipped with p_mirror_per_axis, image and seg together."""
        axes = [a for a in self.mirror_axes if rng.random() < self.p_mirror_per_axis]
        if not axes:
            return image, seg
        image = np.ascontiguousarray(np.flip(image, [a + 1 for a in axes]))
        seg = np.ascontiguousarray(np.flip(seg, axes))
        return image, seg
