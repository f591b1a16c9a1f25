"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016).

Each 2x2 output tile is `A^T [(G k G^T) * (B^T d B)] A` of its 4x4 input tile, so the
convolution becomes 16 GEMMs of (tiles, C_in) x (C_in, C_out): 2.25x fewer multiply-adds
than the direct convolution, in all three of the forward, input-gradient and kernel-gradient
passes. F(2x2, 3x3) is as accurate as the direct algorithm in float32 (its transforms add at
most four terms and scale by 1/2); larger tiles such as F(4x4, 3x3) are not (~1e-5).

The 16 Winograd-domain planes stay separate arrays: XLA:CPU concatenation is slow. The
kernel gradient recomputes the input planes instead of storing them (4x the input).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def _combine(terms, coeffs):
    """sum_i coeffs[i] * terms[i], skipping zeros and multiplying only where |c| != 1."""
    total = None
    for c, t in zip(coeffs, terms):
        if c == 0:
            continue
        t = t if c == 1 else -t if c == -1 else t * jnp.asarray(c, t.dtype)
        total = t if total is None else total + t
    return total


def _tiles(h: int, w: int, padding: int) -> tuple[int, int, int, int]:
    """Output size and number of 2x2 tiles per axis."""
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    return ho, wo, -(-ho // 2), -(-wo // 2)


def _input_planes(x: jax.Array, padding: int) -> list[jax.Array]:
    """B^T d B for every tile: 16 arrays (B*tiles_h*tiles_w, C_in)."""
    b, h, w, c = x.shape
    ho, wo, th, tw = _tiles(h, w, padding)
    x = jnp.pad(x, ((0, 0), (padding, padding + 2 * th - ho), (padding, padding + 2 * tw - wo), (0, 0)))
    x = jax.lax.optimization_barrier(x)  # padding fused into 16 strided readers is slower

    def grid(p, q):  # element (p, q) of every 4x4 tile
        return x[:, p:p + 2 * th - 1:2, q:q + 2 * tw - 1:2]

    rows = [[grid(p, q) for q in range(4)] for p in range(4)]
    return [_combine([_combine(rows[p], _BT[j]) for p in range(4)], _BT[i]).reshape(-1, c)
            for i in range(4) for j in range(4)]


def _kernel_planes(k: jax.Array) -> list[jax.Array]:
    """G k G^T: 16 arrays (C_in, C_out) from the HWIO kernel."""
    rows = [_combine([k[r] for r in range(3)], _G[i]) for i in range(4)]
    return [_combine([row[s] for s in range(3)], _G[j]) for row in rows for j in range(4)]


def _kernel_planes_transpose(du: list[jax.Array]) -> jax.Array:
    """The adjoint of `_kernel_planes`, G^T du G, written out: 4x faster than autodiff's."""
    rows = [[_combine(du[4 * i:4 * i + 4], _G[:, s]) for s in range(3)] for i in range(4)]
    return jnp.stack([jnp.stack([_combine([row[s] for row in rows], _G[:, r]) for s in range(3)])
                      for r in range(3)])


def _output(planes: list[jax.Array], b: int, ho: int, wo: int) -> jax.Array:
    """A^T m A for every tile, tiles interleaved into (B, ho, wo, C_out)."""
    th, tw = -(-ho // 2), -(-wo // 2)
    m = [p.reshape(b, th, tw, -1) for p in planes]
    y = [[_combine([_combine(m[4 * i:4 * i + 4], _AT[q]) for i in range(4)], _AT[p]) for q in range(2)]
         for p in range(2)]
    y = jnp.stack([jnp.stack(row, axis=3) for row in y], axis=2)  # (B, th, 2, tw, 2, C)
    return y.reshape(b, 2 * th, 2 * tw, -1)[:, :ho, :wo]


def _matmuls(a: list[jax.Array], b: list[jax.Array], transpose_a=False, transpose_b=False):
    acc = jnp.promote_types(a[0].dtype, jnp.float32)
    return [jnp.matmul(x.T if transpose_a else x, y.T if transpose_b else y,
                       preferred_element_type=acc).astype(a[0].dtype) for x, y in zip(a, b)]


def _forward(x, k, padding):
    b, h, w, _ = x.shape
    ho, wo, _, _ = _tiles(h, w, padding)
    return _output(_matmuls(_input_planes(x, padding), _kernel_planes(k)), b, ho, wo)


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
