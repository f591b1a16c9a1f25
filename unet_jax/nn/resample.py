"""torch's 2x upsampling layers, NHWC."""

import jax
import jax.numpy as jnp

from unet_jax import ops


def upsample_nearest2(x: jax.Array) -> jax.Array:
    """nn.Upsample(scale_factor=2) / nn.UpsamplingNearest2d(2)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def upsample_bilinear2(x: jax.Array) -> jax.Array:
    """nn.UpsamplingBilinear2d(scale_factor=2), i.e. bilinear with align_corners=True.

    `jax.image.resize` uses half-pixel centres (align_corners=False) and differs by O(1)."""
    return ops.upsample_bilinear2(x)
