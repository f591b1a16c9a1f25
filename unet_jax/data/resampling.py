"""nnU-Net's resampling of volumes to a shape (`resample_data_or_seg_to_shape` of nnunetv2
2.8.1). Images (is_seg False): per channel, skimage's `resize` (mode "edge", no anti-aliasing, in
float64, cast back to the input's dtype); for anisotropic spacing (one axis more than 3x
coarser) the in-plane axes slice by slice, then the coarse axis by nearest neighbour
(`order_z` 0). Segmentations (is_seg True, `resample_seg`): each label's indicator resized
at `order` and the label of the highest score taken, a tie going to the nearest neighbour's
label when it is among the tied (batchgenerators 0.25's `resize_segmentation`); the coarse
axis of anisotropic data by nearest neighbour. An unchanged shape returns the input itself.
Host-side NumPy / SciPy, as in nnU-Net: the same library calls give the same numbers."""

import numpy as np

ANISOTROPY = 3.0  # nnU-Net's ANISO_THRESHOLD: a spacing ratio above it resamples one axis apart


def new_shape(shape, spacing, target) -> tuple[int, ...]:
    """The shape of a volume of `shape` at `spacing` resampled to `target` (Python's round,
    half to even, of old_spacing / new_spacing * old_size)."""
    return tuple(int(round(s / t * n)) for n, s, t in zip(shape, spacing, target, strict=True))


def separate_axis(spacing, target) -> int | None:
    """The coarse axis nnU-Net resamples apart: that of the current spacing if it is
    anisotropic, else that of the target; None when neither is, or when the coarsest
    spacing is shared by several axes."""
    for s in (spacing, target):
        s = np.asarray(s, float)
        if s.max() / s.min() > ANISOTROPY:
            axes = np.where(s.max() / s == 1)[0]
            return int(axes[0]) if len(axes) == 1 else None
    return None


def resample(data: np.ndarray, shape, spacing, target, order: int, order_z: int = 0) -> np.ndarray:
    """`data` (C, *spatial) resampled to `shape` (spatial) as nnU-Net resamples it from
    `spacing` to `target`; the result has `data`'s dtype."""
    from skimage.transform import resize
    shape = tuple(int(n) for n in shape)
    if tuple(data.shape[1:]) == shape:
        return data
    axis = separate_axis(spacing, target)
    out = np.zeros((data.shape[0], *shape), data.dtype)
    source = data.astype(np.float64)
    for c, channel in enumerate(source):
        if axis is None:
            out[c] = resize(channel, shape, order, mode="edge", anti_aliasing=False)
            continue
        planar = tuple(n for i, n in enumerate(shape) if i != axis)
        staged = np.zeros(tuple(channel.shape[axis] if i == axis else n for i, n in enumerate(shape)))
        for k in range(channel.shape[axis]):
            index = tuple(k if i == axis else slice(None) for i in range(channel.ndim))
            staged[index] = resize(channel[index], planar, order, mode="edge", anti_aliasing=False)
        out[c] = staged if staged.shape == shape else _along_axis(staged, shape, order_z)
    return out


def resample_seg(seg: np.ndarray, shape, spacing, target, order: int = 1, order_z: int = 0
                 ) -> np.ndarray:
    """A label map `seg` (C, *spatial) resampled to `shape` as nnU-Net resamples
    segmentations from `spacing` to `target` (its `resampling_fn_seg_kwargs` order 1,
    order_z 0); the result has `seg`'s dtype."""
    shape = tuple(int(n) for n in shape)
    if tuple(seg.shape[1:]) == shape:
        return seg
    if order_z != 0:
        raise ValueError(f"segmentation resampling with order_z {order_z}: only nnU-Net's default 0 "
                         "is reproduced")
    axis = separate_axis(spacing, target)
    out = np.zeros((seg.shape[0], *shape), seg.dtype)
    for c, channel in enumerate(seg):
        if axis is None:
            out[c] = _labels_resized(channel, shape, order)
            continue
        planar = tuple(n for i, n in enumerate(shape) if i != axis)
        staged = np.zeros(tuple(channel.shape[axis] if i == axis else n for i, n in enumerate(shape)))
        for k in range(channel.shape[axis]):
            index = tuple(k if i == axis else slice(None) for i in range(channel.ndim))
            staged[index] = _labels_resized(channel[index], planar, order)
        out[c] = staged if staged.shape == shape else _along_axis(staged, shape, 0)
    return out


def _labels_resized(labels: np.ndarray, shape, order: int) -> np.ndarray:
    """One label map resized: the argmax over the labels' resized indicators (the first
    label on ties), where the nearest neighbour's label ties for the top it wins."""
    from skimage.transform import resize

    def resized(x, at):
        return resize(x.astype(float), shape, at, mode="edge", clip=True, anti_aliasing=False)
    values = np.unique(labels)
    if order == 0 or len(values) == 1:
        return resized(labels, 0).astype(labels.dtype)
    nearest = resized(labels, 0)
    best = win = nearest_score = None
    for value in values:
        score = resized(labels == value, order)
        if best is None:
            best, win = score, np.full(shape, value, labels.dtype)
            nearest_score = np.where(nearest == value, score, -1.0)
            continue
        win[score > best] = value
        best = np.maximum(best, score)
        nearest_score = np.where(nearest == value, score, nearest_score)
    ties = (nearest_score == best) & (best > 0)
    win[ties] = nearest[ties].astype(labels.dtype)
    return win


def _along_axis(staged: np.ndarray, shape, order: int) -> np.ndarray:
    """map_coordinates at the centres of `shape`'s voxels (the in-plane axes already have
    their size, so only the coarse axis moves)."""
    from scipy.ndimage import map_coordinates
    grid = np.mgrid[tuple(slice(0, n) for n in shape)].astype(float)
    coords = np.stack([(m / n) * (g + 0.5) - 0.5 for g, m, n in zip(grid, staged.shape, shape, strict=True)])
    return map_coordinates(staged, coords, order=order, mode="nearest")
