"""CPU transposed convolutions: non-overlapping taps as one GEMM, overlapping kernels that
are multiples of the stride as one small conv per output phase (Winograd F(2x2, 2x2) for
twice the stride), kernel gradients as one GEMM per tap. XLA:CPU's dilated convolution
multiplies stride**2 times as many zeros (docs/cpu-kernels.md)."""

import functools

import jax
import jax.numpy as jnp

from unet_jax.kernels.cpu import winograd
from unet_jax.kernels.cpu.conv import with_tapwise_kernel_grad


def _valid_conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((0, 0), (0, 0)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def by_phases(x, k, stride: int, padding: int, correlate=_valid_conv):
    """torch ConvTranspose2d as stride**2 small convs of the undilated input, one per output
    phase, interleaved; for kernels that are multiples of the stride and outputs that are too.

    Output o = s*a + r receives x[i] k[t] for t = s*(a - i) + r + p: taps t = s*m + q with
    q = (r + p) % s, from x[a + (r + p) // s - m]. Each phase is `correlate(x_padded,
    k_phase)`, a valid stride-1 correlation."""
    b, h, w, _ = x.shape
    taps = k.shape[0] // stride
    out_h, out_w = (((n - 1) * stride - 2 * padding + k.shape[0]) // stride for n in (h, w))

    def axis(r: int, out: int, size: int):
        """First tap of phase r and the padding that aligns its window with the outputs."""
        q, shift = (r + padding) % stride, (r + padding) // stride
        return q, (taps - 1 - shift, out - size + shift, 0)

    zero = jnp.zeros((), x.dtype)
    rows = []
    for r in range(stride):
        q_row, pad_row = axis(r, out_h, h)
        row = []
        for c in range(stride):
            q_col, pad_col = axis(c, out_w, w)
            xp = jax.lax.pad(x, zero, [(0, 0, 0), pad_row, pad_col, (0, 0, 0)])
            row.append(correlate(xp, k[q_row::stride, q_col::stride][::-1, ::-1]))
        rows.append(row)
    y = jnp.stack([jnp.stack(row, axis=3) for row in rows], axis=2)  # (B, H, s, W, s, C)
    return y.reshape(b, out_h * stride, out_w * stride, -1)


def phases_apply(kernel: int, stride: int, padding: int) -> bool:
    return stride > 1 and kernel % stride == 0 and (kernel - 2 * padding) % stride == 0


def gemm_depth_to_space(x, k):
    """Non-overlapping taps (kernel == stride, no padding), 1-, 2- or 3-D: one (B*H*W, C) x
    (C, kh*kw*out) GEMM + depth-to-space; it and its gradient are far cheaper on XLA:CPU than
    the dilated conv (48x for nnU-Net's 3-D up-convolutions). As a 2-D matmul, not an einsum:
    XLA then computes the einsum's transpose and reorders it element by element."""
    *kernel, in_ch, out_ch = k.shape
    dn = len(kernel)
    batch, *sizes, _ = x.shape
    taps = k.transpose(dn, *range(dn), dn + 1).reshape(in_ch, -1)
    y = (x.reshape(-1, in_ch) @ taps).reshape(batch, *sizes, *kernel, out_ch)
    interleaved = [0] + [a for i in range(dn) for a in (1 + i, 1 + dn + i)] + [1 + 2 * dn]
    return y.transpose(interleaved).reshape(batch, *(n * t for n, t in zip(sizes, kernel, strict=True)),
                                            out_ch)


def choose_taps(plain, x: jax.Array, k: jax.Array):
    """The CPU algorithm for a transposed convolution with stride == kernel, no padding."""
    return gemm_depth_to_space


def choose(plain, x: jax.Array, k: jax.Array, *, stride: int, padding: int):
    """The CPU algorithm for `plain(x, k)`, torch's ConvTranspose2d(stride, padding)."""
    kernel = k.shape[0]
    if kernel == k.shape[1] == stride and padding == 0:
        return gemm_depth_to_space
    phases = phases_apply(kernel, stride, padding)
    op = by_phases if phases else (lambda x, k, stride, padding: plain(x, k))
    primal = None
    if x.dtype in (jnp.float32, jnp.float64) and kernel == 2 * stride and phases:
        primal = functools.partial(by_phases, correlate=winograd.correlate2x2)
    fn = with_tapwise_kernel_grad(op, sliding_first=False, primal=primal)
    return lambda x, k: fn(x, k, stride, padding)
