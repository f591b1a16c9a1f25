"""Attention gates: a feature map times a broadcast gate, NHWC."""

import jax
import jax.numpy as jnp


def gate(x: jax.Array, g: jax.Array) -> jax.Array:
    """`x * g`, `g` broadcast over channels (a spatial gate) or pixels (a channel gate).
    Computed in at least float32 so the gate's gradient, a sum over the broadcast axes,
    accumulates in float32 under bf16; the result has x's dtype."""
    wide = jnp.promote_types(x.dtype, jnp.float32)
    return (x.astype(wide) * g.astype(wide)).astype(x.dtype)
