"""The upstreams' skip-connection crops and size checks, NHWC."""

import jax
import jax.numpy as jnp


def crop_like_semseg(skip: jax.Array, up: jax.Array, valid_sizes: str) -> jax.Array:
    """pytorch-semseg unetUp: `F.pad(skip, 2 * [offset // 2, offset // 2])`.

    offset = up.H - skip.H (negative), so `-offset // 2` is cropped from every side; the
    offset is computed from H only and applied to W as well. torch's `cat` then fails when
    the sizes disagree (odd offsets, non-square mismatches): so do we, naming valid sizes.
    """
    c = -((up.shape[1] - skip.shape[1]) // 2)
    cropped = skip[:, c:skip.shape[1] - c, c:skip.shape[2] - c, :]
    if cropped.shape[1:3] != up.shape[1:3]:
        raise ValueError(
            f"input size not supported: a skip connection of size {skip.shape[1:3]} cropped by "
            f"{c} per side gives {cropped.shape[1:3]}, the upsampled path is {up.shape[1:3]} "
            f"(torch fails here too). {valid_sizes}")
    return cropped


def center_crop(skip: jax.Array, h: int, w: int) -> jax.Array:
    """torchvision `center_crop(skip, [h, w])`: offset `int(round((H - h) / 2))` per axis.

    Python's round is half-to-even, so a difference of 1 crops 0 and a difference of 3
    crops 2 from the top/left.
    """
    top = int(round((skip.shape[1] - h) / 2.0))
    left = int(round((skip.shape[2] - w) / 2.0))
    return skip[:, top:top + h, left:left + w, :]


def require_same_size(skip: jax.Array, up: jax.Array, valid_sizes: str) -> None:
    """Raise where torch's `cat` would fail on a spatial size mismatch."""
    if skip.shape[1:3] != up.shape[1:3]:
        raise ValueError(
            f"input size not supported: a skip connection of size {skip.shape[1:3]} meets an "
            f"upsampled path of size {up.shape[1:3]} (torch fails here too). {valid_sizes}")


def pad_to(x: jax.Array, h: int, w: int) -> jax.Array:
    """milesial `Up`: `F.pad(x1, [dX // 2, dX - dX // 2, dY // 2, dY - dY // 2])` with
    dY = h - H, dX = w - W: zeros around `x` up to (h, w), the odd pixel bottom / right."""
    dy, dx = h - x.shape[1], w - x.shape[2]
    if dy < 0 or dx < 0:
        raise ValueError(f"cannot pad {x.shape[1:3]} to the smaller {(h, w)}")
    return jnp.pad(x, ((0, 0), (dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)))
