"""nnU-Net's sliding-window prediction (nnunetv2 2.8.1 `predict_sliding_window_return_logits`):
the volume zero-padded (centred) to at least the patch, windows at nnU-Net's steps, each
window's logits weighted by nnU-Net's Gaussian and summed, then divided by the summed weights.
The sums are float16 in window order, as nnU-Net keeps them (on every device). A patch of one
axis fewer than the volume (a 2-D configuration) slides over every slice."""

import functools
from collections.abc import Callable

import numpy as np


def steps(size, patch, step: float) -> list[list[int]]:
    """The window starts per axis: as few windows as cover `size` with at most `step` x
    patch between starts, spread evenly (numpy's round, half to even)."""
    starts = []
    for n, p in zip(size, patch, strict=True):
        count = int(np.ceil((n - p) / (p * step))) + 1
        spacing = (n - p) / (count - 1) if count > 1 else 0.0
        starts.append([int(np.round(spacing * i)) for i in range(count)])
    return starts


@functools.lru_cache(maxsize=4)
def gaussian(patch: tuple[int, ...], sigma_scale: float = 1 / 8, peak: float = 10.0) -> np.ndarray:
    """nnU-Net's window weight, float16: a unit impulse at the patch centre (p // 2) blurred
    with sigma p * sigma_scale (zero boundary), scaled to `peak`; zeros raised to the
    smallest non-zero weight."""
    from scipy.ndimage import gaussian_filter
    impulse = np.zeros(patch)
    impulse[tuple(p // 2 for p in patch)] = 1
    g = gaussian_filter(impulse, [p * sigma_scale for p in patch], 0, mode="constant", cval=0)
    g = (g / (np.max(g) / peak)).astype(np.float16)
    g[g == 0] = g[g != 0].min()
    g.flags.writeable = False
    return g


def pad_to(data: np.ndarray, patch) -> tuple[np.ndarray, tuple[slice, ...]]:
    """`data` (C, *spatial) zero-padded on its last len(patch) axes to at least `patch`, the
    odd voxel after; and the slices of the original inside the result."""
    lead = data.ndim - 1 - len(patch)
    want = [*data.shape[1:1 + lead], *patch]
    pads = [(0, 0)] + [((max(w, n) - n) // 2, (max(w, n) - n) - (max(w, n) - n) // 2)
                       for w, n in zip(want, data.shape[1:], strict=True)]
    padded = np.pad(data, pads) if any(sum(p) for p in pads) else data
    return padded, tuple(slice(lo, n - hi) for (lo, hi), n in zip(pads[1:], padded.shape[1:], strict=True))


def windows(spatial, patch, step: float) -> list[tuple]:
    """The spatial index of every window, in nnU-Net's order (first axis outermost)."""
    if len(patch) < len(spatial):  # a 2-D configuration: every slice, then the plane's windows
        grid = steps(spatial[1:], patch, step)
        return [(d, *(slice(s, s + p) for s, p in zip(starts, patch, strict=True)))
                for d in range(spatial[0]) for starts in _product(grid)]
    grid = steps(spatial, patch, step)
    return [tuple(slice(s, s + p) for s, p in zip(starts, patch, strict=True)) for starts in _product(grid)]


def _product(grid):
    if not grid:
        yield ()
        return
    for s in grid[0]:
        for rest in _product(grid[1:]):
            yield (s, *rest)


def predict_logits(predict: Callable[[np.ndarray], np.ndarray], data: np.ndarray, patch, classes: int,
                   step: float = 0.5, batch: int = 1, use_gaussian: bool = True) -> np.ndarray:
    """(classes, *spatial) float16 logits of `data` (C, *spatial) float32.

    `predict` maps a batch of windows (B, *patch, C) float32, channels-last, to their
    logits (B, *patch, classes) float32 (any mirroring done); it gets `batch` windows per
    call (the last call padded with repeats)."""
    padded, inside = pad_to(data, patch)
    spatial = padded.shape[1:]
    logits = np.zeros((classes, *spatial), np.float16)
    counts = np.zeros(spatial, np.float16)
    weight = gaussian(tuple(patch)).astype(np.float32) if use_gaussian else np.float32(1)
    todo = windows(spatial, patch, step)
    for first in range(0, len(todo), batch):
        chunk = todo[first:first + batch]
        stack = np.stack([np.moveaxis(padded[(slice(None), *w)], 0, -1) for w in chunk])
        if len(chunk) < batch:
            stack = np.concatenate([stack, np.repeat(stack[-1:], batch - len(chunk), 0)])
        out = np.asarray(predict(stack), np.float32)
        for w, pred in zip(chunk, out, strict=False):
            pred = np.moveaxis(pred, -1, 0) * weight
            target = (slice(None), *w)
            logits[target] = (logits[target].astype(np.float32) + pred).astype(np.float16)
            counts[w] = (counts[w].astype(np.float32) + weight).astype(np.float16)
    logits = (logits.astype(np.float32) / counts.astype(np.float32)).astype(np.float16)
    if not np.isfinite(logits).all():
        raise ValueError("the summed window logits are not finite (float16 overflow, as nnU-Net's "
                         "would be): the network's outputs are far larger than a trained one's")
    return logits[(slice(None), *inside)]
