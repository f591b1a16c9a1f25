"""Small convolutions by Winograd's minimal filtering (Lavin & Gray 2016).

F(2x2, 3x3) for 3x3 stride-1 convolutions: each 2x2 output tile is
`A^T [(G k G^T) * (B^T d B)] A` of its 4x4 input tile, so the convolution becomes 16 GEMMs
of (tiles, C_in) x (C_in, C_out): 2.25x fewer multiply-adds than the direct convolution, in
all three of the forward, input-gradient and kernel-gradient passes. F(2x2, 3x3) is as
accurate as the direct algorithm in float32 (its transforms add at most four terms and scale
by 1/2); larger tiles such as F(4x4, 3x3) or F(3x3, 3x3) are not (~1e-5, ~3e-6 per conv).

F(2x2, 2x2) for 2x2 valid correlations (the output phases of UNet++'s k4 s2 transposed
convs): 9 GEMMs instead of 16, with integer transforms.

The Winograd-domain planes stay separate arrays: XLA:CPU concatenation is slow. The
kernel gradient recomputes the input planes instead of storing them (4x the input).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class _Transform(NamedTuple):
    """F(2x2, r x r): input tiles of n = r + 1, `bt` (n, n), `g` (n, r), `at` (2, n)."""
    bt: np.ndarray
    g: np.ndarray
    at: np.ndarray


# F(2, 3) from the points 0, 1, -1, inf.
F2X3 = _Transform(bt=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
                  g=np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
                  at=np.array([[1, 1, 1, 0], [0, 1, -1, -1]]))
# F(2, 2) from the points 0, 1, inf: m0 = (d0 - d1) g0, m1 = d1 (g0 + g1), m2 = (d2 - d1) g1;
# y0 = m0 + m1, y1 = m1 + m2. The points 1, -1 were as accurate and 10% slower (halves in G).
F2X2 = _Transform(bt=np.array([[-1, 1, 0], [0, 1, 0], [0, -1, 1]]),
                  g=np.array([[-1, 0], [1, 1], [0, 1]]),
                  at=np.array([[1, 1, 0], [0, 1, 1]]))


def _combine(terms, coeffs):
    """sum_i coeffs[i] * terms[i], skipping zeros and multiplying only where |c| != 1."""
    total = None
    for c, t in zip(coeffs, terms):
        if c == 0:
            continue
        t = t if c == 1 else -t if c == -1 else t * jnp.asarray(c, t.dtype)
        total = t if total is None else total + t
    return total


def _tiles(h: int, w: int, padding: int, t: _Transform = F2X3) -> tuple[int, int, int, int]:
    """Output size and number of 2x2 tiles per axis."""
    r = t.g.shape[1]
    ho, wo = h + 2 * padding - r + 1, w + 2 * padding - r + 1
    return ho, wo, -(-ho // 2), -(-wo // 2)


def _input_planes(x: jax.Array, padding: int, t: _Transform = F2X3) -> list[jax.Array]:
    """B^T d B for every tile: n*n arrays (B*tiles_h*tiles_w, C_in)."""
    b, h, w, c = x.shape
    n = t.bt.shape[0]
    ho, wo, th, tw = _tiles(h, w, padding, t)
    x = jnp.pad(x, ((0, 0), (padding, padding + 2 * th - ho), (padding, padding + 2 * tw - wo), (0, 0)))
    x = jax.lax.optimization_barrier(x)  # padding fused into n*n strided readers is slower

    def grid(p, q):  # element (p, q) of every n x n tile
        return x[:, p:p + 2 * th - 1:2, q:q + 2 * tw - 1:2]

    rows = [[grid(p, q) for q in range(n)] for p in range(n)]
    return [_combine([_combine(rows[p], t.bt[j]) for p in range(n)], t.bt[i]).reshape(-1, c)
            for i in range(n) for j in range(n)]


def _kernel_planes(k: jax.Array, t: _Transform = F2X3) -> list[jax.Array]:
    """G k G^T: n*n arrays (C_in, C_out) from the HWIO kernel."""
    n, r = t.g.shape
    rows = [_combine([k[a] for a in range(r)], t.g[i]) for i in range(n)]
    return [_combine([row[a] for a in range(r)], t.g[j]) for row in rows for j in range(n)]


def _kernel_planes_transpose(du: list[jax.Array]) -> jax.Array:
    """The adjoint of `_kernel_planes` for F(2x2, 3x3), G^T du G, written out: 4x faster than
    autodiff's."""
    g = F2X3.g
    rows = [[_combine(du[4 * i:4 * i + 4], g[:, s]) for s in range(3)] for i in range(4)]
    return jnp.stack([jnp.stack([_combine([row[s] for row in rows], g[:, r]) for s in range(3)])
                      for r in range(3)])


def _output(planes: list[jax.Array], b: int, ho: int, wo: int, t: _Transform = F2X3) -> jax.Array:
    """A^T m A for every tile, tiles interleaved into (B, ho, wo, C_out)."""
    n = t.at.shape[1]
    th, tw = -(-ho // 2), -(-wo // 2)
    m = [p.reshape(b, th, tw, -1) for p in planes]
    y = [[_combine([_combine(m[n * i:n * i + n], t.at[q]) for i in range(n)], t.at[p])
          for q in range(2)] for p in range(2)]
    y = jnp.stack([jnp.stack(row, axis=3) for row in y], axis=2)  # (B, th, 2, tw, 2, C)
    return y.reshape(b, 2 * th, 2 * tw, -1)[:, :ho, :wo]


def _matmuls(a: list[jax.Array], b: list[jax.Array], transpose_a=False, transpose_b=False):
    acc = jnp.promote_types(a[0].dtype, jnp.float32)
    return [jnp.matmul(x.T if transpose_a else x, y.T if transpose_b else y,
                       preferred_element_type=acc).astype(a[0].dtype) for x, y in zip(a, b)]


def _forward(x, k, padding, t: _Transform = F2X3):
    b, h, w, _ = x.shape
    ho, wo, _, _ = _tiles(h, w, padding, t)
    return _output(_matmuls(_input_planes(x, padding, t), _kernel_planes(k, t)), b, ho, wo, t)


def correlate2x2(x: jax.Array, k: jax.Array) -> jax.Array:
    """`F.conv2d(x, k)` for a 2x2 kernel (valid, stride 1), NHWC / HWIO, by F(2x2, 2x2).

    Differentiable by autodiff, but only its forward is measured to be faster."""
    return _forward(x, k, 0, F2X2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3x3(x: jax.Array, k: jax.Array, padding: int, winograd_input_grad: bool) -> jax.Array:
    """torch `F.conv2d(x, k, padding=padding)` for a 3x3 kernel, stride 1, NHWC / HWIO.

    The input gradient is a Winograd transposed convolution when `winograd_input_grad`,
    else XLA's own (faster where C_in is small).
    """
    return _forward(x, k, padding)


def _fwd(x, k, padding, winograd_input_grad):
    return _forward(x, k, padding), (x, k)


def _bwd(padding, winograd_input_grad, residuals, dy):
    x, k = residuals
    b, h, w, _ = x.shape
    ho, wo, th, tw = _tiles(h, w, padding)
    out_shape = [jax.ShapeDtypeStruct((b * th * tw, k.shape[-1]), dy.dtype)] * 16
    (dm,) = jax.linear_transpose(lambda m: _output(m, b, ho, wo), out_shape)(dy)
    # autodiff's adjoint of the input transform: written out, it is 5x faster alone but
    # slower inside a UNet++ step (XLA fuses these pads into their neighbours)
    planes, input_t = jax.vjp(lambda x: _input_planes(x, padding), x)
    dk = _kernel_planes_transpose(_matmuls(planes, dm, transpose_a=True))
    if winograd_input_grad:
        (dx,) = input_t(_matmuls(dm, _kernel_planes(k), transpose_b=True))
    else:
        conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                                 padding=((padding, padding),) * 2,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
        (dx,) = jax.vjp(lambda x: conv(x, k), x)[1](dy)
    return dx, dk


conv3x3.defvjp(_fwd, _bwd)
