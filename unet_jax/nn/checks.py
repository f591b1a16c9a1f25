"""Input checks shared by every model: dtype, layout, channels and size, with hints."""

import jax
import jax.numpy as jnp


def check_input(x: jax.Array, in_channels: int, min_size: int, arch: str) -> None:
    """Reject inputs that are not float NHWC with `in_channels` channels and >= `min_size`."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{arch} expects a floating-point image batch, got {x.dtype}: scale integer images "
            "to float first (e.g. x.astype(np.float32) / 255, or the preprocessing the weights "
            "were trained with)")
    if x.ndim != 4 or x.shape[-1] != in_channels:
        got = f"got shape {tuple(x.shape)}"
        if x.ndim == 4 and x.shape[1] == in_channels:
            hint = " (convert torch's NCHW with x.transpose(0, 2, 3, 1))"
        elif x.ndim == 4 and x.shape[-1] == 1 and in_channels == 3:
            hint = " (a grayscale image: repeat it to RGB with np.repeat(x, 3, axis=-1))"
        elif x.ndim == 4 and x.shape[-1] == 4 and in_channels == 3:
            hint = " (an RGBA image: drop the alpha channel with x[..., :3])"
        elif x.ndim == 4 and x.shape[-1] == 3 and in_channels == 1:
            hint = " (an RGB image for a 1-channel model: convert it to grayscale first)"
        elif x.ndim == 3:
            hint = " (a single image: add the batch axis with x[None])"
        else:
            hint = ""
        raise ValueError(f"{arch} expects NHWC input with {in_channels} channels, {got}; "
                         f"its last axis has {x.shape[-1] if x.ndim else 0} channels{hint}")
    if min(x.shape[1:3]) < min_size:
        raise ValueError(f"{arch}: input {tuple(x.shape[1:3])} is too small; "
                         f"the smallest input is {min_size}x{min_size}")


def check_divisible(x: jax.Array, multiple: int, arch: str) -> None:
    """Reject H or W not divisible by `multiple`, naming the nearest valid sizes."""
    h, w = x.shape[1:3]
    if h % multiple or w % multiple:
        def near(n: int) -> str:
            lo, hi = max(multiple, n // multiple * multiple), -(-n // multiple) * multiple
            return str(hi) if lo == hi else f"{lo} or {hi}"
        raise ValueError(f"{arch} takes H and W divisible by {multiple}, got {h}x{w}: the nearest "
                         f"valid sizes are H {near(h)}, W {near(w)} (unet-jax predict pads and "
                         "crops any image to them)")
