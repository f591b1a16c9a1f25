"""Align-corners bilinear upsampling's gradient on CPU as gathers: XLA:CPU's scatter-add
(autodiff's adjoint of the forward's gathers) is several times slower, and a dense matmul
more so."""

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax.interpolation import align_corners_weights


def _lerp_axis_transpose(dy: jax.Array, axis: int) -> jax.Array:
    """The adjoint of a 2x lerp along `axis`: each input gathers, with its weights, the few
    outputs it feeds (at most 4), in ascending output order as torch's backward sums them."""
    n_in = dy.shape[axis] // 2
    lo, hi, frac = align_corners_weights(n_in, dy.dtype)
    weights = np.zeros((n_in, 2 * n_in))
    weights[lo, np.arange(2 * n_in)] += 1 - frac
    weights[hi, np.arange(2 * n_in)] += frac
    shape = [1] * dy.ndim
    shape[axis] = n_in
    dx = None
    for k in range((weights != 0).sum(axis=1).max()):
        index, weight = np.zeros(n_in, np.int32), np.zeros(n_in)
        for i, row in enumerate(weights):
            feeds = np.flatnonzero(row)
            if k < feeds.size:
                index[i], weight[i] = feeds[k], row[feeds[k]]
        term = jnp.take(dy, index, axis=axis) * jnp.asarray(weight.reshape(shape), dy.dtype)
        dx = term if dx is None else dx + term
    return dx


def choose(plain, x: jax.Array):
    """`plain(x)` (2x align-corners bilinear over H and W) with the gather-based gradient."""

    @jax.custom_vjp
    def upsample(x):
        return plain(x)

    upsample.defvjp(lambda x: (plain(x), None),
                    lambda _, dy: (_lerp_axis_transpose(_lerp_axis_transpose(dy, 1), 2),))
    return upsample
