"""Max-pooling's gradient on CPU as compares and selects: XLA:CPU's select-and-scatter
(autodiff's gradient of `reduce_window`) is several times slower than torch's backward."""

import jax
import jax.numpy as jnp


def _gradient(kernel, stride, x, y, dy):
    """To the first maximum of each window in row-major order, as torch's. Tap (i, j) =
    (s*di + p, s*dj + q) of output (h, w) reads input (s*(h + di) + p, s*(w + dj) + q): the
    gradient is assembled on the input viewed as (blocks, phase) per axis, one select per
    shift (di, dj)."""
    b, h, w, c = x.shape
    _, ho, wo, _ = y.shape
    shifts = -(-kernel // stride)
    blocks = (ho + shifts - 1, wo + shifts - 1)
    hp, wp = stride * blocks[0], stride * blocks[1]
    grid = [(0, 0, 0), (0, hp - h, 0), (0, wp - w, 0), (0, 0, 0)]
    phases = jax.lax.pad(x, jnp.array(-jnp.inf, x.dtype), grid).reshape(
        b, blocks[0], stride, blocks[1], stride, c)

    def tap(i, j):
        (di, p), (dj, q) = divmod(i, stride), divmod(j, stride)
        return phases[:, di:di + ho, p:p + 1, dj:dj + wo, q:q + 1]

    taps = kernel * kernel
    y6 = y[:, :, None, :, None]
    # The row-major index of the first maximum, by argmax: a reduction, so XLA computes it
    # once instead of fusing it into (and repeating it in) every shift's select below.
    first = jnp.argmax(jnp.stack([tap(t // kernel, t % kernel) == y6 for t in range(taps)]),
                       axis=0).astype(jnp.int8)
    # Phase iotas, not NumPy constants: iotas fuse into the selects, constants are loaded.
    row_phase = jax.lax.broadcasted_iota(jnp.int8, (stride, 1, stride, 1), 0)
    col_phase = jax.lax.broadcasted_iota(jnp.int8, (stride, 1, stride, 1), 2)
    zero = jnp.zeros((), dy.dtype)
    dx = None
    for di in reversed(range(shifts)):  # torch's order (outputs row-major): bit-equal sums
        for dj in reversed(range(shifts)):
            i, j = stride * di + row_phase, stride * dj + col_phase
            index = jnp.where((i < kernel) & (j < kernel), kernel * i + j, -1).astype(jnp.int8)
            pad = ((0, 0), (di, shifts - 1 - di), (0, 0), (dj, shifts - 1 - dj), (0, 0), (0, 0))
            first6 = jnp.pad(first, pad, constant_values=-1)
            dy6 = jnp.pad(dy[:, :, None, :, None], pad)
            term = jnp.where(index == first6, dy6, zero)
            dx = term if dx is None else dx + term
    dx = dx.reshape(b, hp, wp, c)
    return jax.lax.pad(dx, zero, [(0, 0, 0), (0, h - hp, 0), (0, w - wp, 0), (0, 0, 0)])


def choose(plain, x: jax.Array, *, kernel: int, stride: int):
    """`plain(x)` (the max-pool) with the select-based gradient."""

    @jax.custom_vjp
    def pool(x):
        return plain(x)

    def fwd(x):
        y = plain(x)
        return y, (x, y)

    pool.defvjp(fwd, lambda res, dy: (_gradient(kernel, stride, *res, dy),))
    return pool

