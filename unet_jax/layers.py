"""Primitives with PyTorch semantics, NHWC.

Every torch quirk the models depend on lives here once: torch's default init, the exact
BatchNorm2d update, transposed convolutions in torch's weight layout, ceil-mode pooling,
align-corners bilinear and nearest upsampling, and the two upstream crop rules.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unet_jax import winograd


def _torch_uniform(bound: float):
    """U(-bound, bound): torch's default init for conv weights and biases."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


_NHWC = ("NHWC", "HWIO", "NHWC")


def _accumulation_dtype(dtype):
    """Accumulate GEMMs in float32 at least (bfloat16 inputs), float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _conv(x, k, stride: int, padding: int):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), ((padding, padding),) * 2,
                                        dimension_numbers=_NHWC)


def _tap_gemms(sliding: jax.Array, fixed: jax.Array, kernel: int, stride: int, padding: int,
               sliding_first: bool) -> jax.Array:
    """A kernel gradient as one GEMM per tap: tap (i, j) contracts `fixed` (B, H, W, C) over
    B*H*W with the window of `sliding`, padded, that starts at (i, j) and steps by `stride`.
    Returns (kernel, kernel, C_first, C_second), `sliding` first when `sliding_first`."""
    b, h, w, _ = fixed.shape
    c = sliding.shape[-1]
    padded = jnp.pad(sliding, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    fixed2 = fixed.reshape(-1, fixed.shape[-1])
    acc = _accumulation_dtype(fixed.dtype)

    def tap(i, j):
        window = jax.lax.slice(padded, (0, i, j, 0), (b, i + stride * (h - 1) + 1,
                                                      j + stride * (w - 1) + 1, c),
                               (1, stride, stride, 1)).reshape(-1, c)
        first, second = (window, fixed2) if sliding_first else (fixed2, window)
        return jnp.matmul(first.T, second, preferred_element_type=acc)

    return jnp.stack([jnp.stack([tap(i, j) for j in range(kernel)]) for i in range(kernel)])


def _with_tapwise_kernel_grad(op, sliding_first: bool, primal=None):
    """`op(x, k, stride, padding)` whose kernel gradient is `_tap_gemms`: XLA:CPU's own
    kernel-gradient convolution is 2-5x slower (README, Benchmarks). For a conv,
    dk[i, j] = sum_out x[s*h + i - p] dy[h]; for a transposed conv (y[s*h + i - p] += x[h] k[i])
    dk[i, j] = sum_in x[h] dy[s*h + i - p]. The forward is `primal` where given (the same
    function by another algorithm); the input gradient is always autodiff's of `op`."""
    primal = primal or op

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def fn(x, k, stride, padding):
        return primal(x, k, stride, padding)

    def fwd(x, k, stride, padding):
        return primal(x, k, stride, padding), (x, k)

    def bwd(stride, padding, residuals, dy):
        x, k = residuals
        dx = jax.vjp(lambda x: op(x, k, stride, padding), x)[1](dy)[0]
        sliding, fixed = (x, dy) if sliding_first else (dy, x)
        dk = _tap_gemms(sliding, fixed, k.shape[0], stride, padding, sliding_first)
        return dx, dk.astype(k.dtype)

    fn.defvjp(fwd, bwd)
    return fn


# Cross-correlation with symmetric padding, NHWC / HWIO.
conv_nhwc = _with_tapwise_kernel_grad(_conv, sliding_first=True)


def _conv_by_products(x, k, padding: int):
    """A stride-1 convolution as kh*kw*C_in broadcast multiply-adds in one fused loop: on
    XLA:CPU 1.5-4x faster than its convolution for a 3x3 conv of 1-4 input channels."""
    kh, kw, in_ch, _ = k.shape
    b, h, w, _ = x.shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    acc = _accumulation_dtype(x.dtype)
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))).astype(acc)
    y = None
    for i in range(kh):
        for j in range(kw):
            for c in range(in_ch):
                term = xp[:, i:i + ho, j:j + wo, c:c + 1] * k[i, j, c].astype(acc)
                y = term if y is None else y + term
    return y.astype(x.dtype)


def _inference_by(primal, differentiable):
    """`primal(x, k)` when not differentiated; under differentiation `differentiable(x, k)`
    and its gradients (both compute the same conv, to float rounding)."""

    @jax.custom_vjp
    def fn(x, k):
        return primal(x, k)

    def fwd(x, k):
        return jax.vjp(differentiable, x, k)  # the vjp function is a pytree of residuals

    fn.defvjp(fwd, lambda vjp, dy: vjp(dy))
    return fn


# Algorithm choice on CPU, measured per layer shape against XLA's convolution (README,
# Benchmarks). Stride 1 with at most STEM_CHANNELS inputs: `_conv_by_products` when not
# differentiated (at stride 2, e.g. ResNet's 7x7 stem, XLA's convolution is faster). 3x3 stride-1
# convs with at least WINOGRAD_CHANNELS inputs and WINOGRAD_MIN_MACS multiply-adds: Winograd
# F(2x2, 3x3), from WINOGRAD_INPUT_GRAD_CHANNELS inputs for the input gradient too (smaller
# convs lose in a whole training step), and when not differentiated only from
# WINOGRAD_INFERENCE_MIN_MACS (below, its many small ops lose to XLA's conv inside a whole
# network's forward). Other convs with at most NATIVE_OUTPUT_CHANNELS outputs: XLA's
# convolution and its own gradients. Otherwise `conv_nhwc`.
# bfloat16 and other platforms always use `conv_nhwc` (cuDNN picks its own algorithms).
STEM_CHANNELS = 4
NATIVE_OUTPUT_CHANNELS = 16
WINOGRAD_CHANNELS = 16
WINOGRAD_MIN_MACS = 2**24
WINOGRAD_INPUT_GRAD_CHANNELS = 256
WINOGRAD_INFERENCE_MIN_MACS = 2**29


def _cpu_algorithm(x: jax.Array, k: jax.Array, stride: int, padding: int):
    kh, kw, in_ch, out_ch = k.shape
    xla = lambda x, k: _conv(x, k, stride, padding)  # noqa: E731
    if in_ch <= STEM_CHANNELS and stride == 1:
        # Under differentiation the products would be fused into, and recomputed by, each
        # of the ~8 consumers in BatchNorm's forward and backward (+7 ms per semseg step).
        differentiable = xla if out_ch <= NATIVE_OUTPUT_CHANNELS else (
            lambda x, k: conv_nhwc(x, k, stride, padding))
        return _inference_by(lambda x, k: _conv_by_products(x, k, padding), differentiable)
    b, h, w, _ = x.shape
    macs = b * (h + 2 * padding - 2) * (w + 2 * padding - 2) * 9 * in_ch * out_ch
    if ((kh, kw, stride) == (3, 3, 1) and in_ch >= WINOGRAD_CHANNELS
            and macs >= WINOGRAD_MIN_MACS and max(in_ch, out_ch) > NATIVE_OUTPUT_CHANNELS):
        input_grad = in_ch >= WINOGRAD_INPUT_GRAD_CHANNELS
        wino = lambda x, k: winograd.conv3x3(x, k, padding, input_grad)  # noqa: E731
        return wino if macs >= WINOGRAD_INFERENCE_MIN_MACS else _inference_by(xla, wino)
    return xla if out_ch <= NATIVE_OUTPUT_CHANNELS else None


def conv2d_nhwc(x: jax.Array, k: jax.Array, stride: int, padding: int) -> jax.Array:
    """`conv_nhwc`, by the fastest algorithm for this shape on CPU (same numbers to float
    rounding: see the parity suite)."""
    cpu = _cpu_algorithm(x, k, stride, padding) if x.dtype in (jnp.float32, jnp.float64) else None
    default = lambda x, k: conv_nhwc(x, k, stride, padding)  # noqa: E731
    if cpu is None:
        return default(x, k)
    return jax.lax.platform_dependent(x, k, cpu=cpu, default=default)


class Conv2d(nnx.Module):
    """torch.nn.Conv2d(in_ch, out_ch, kernel, stride, padding) with torch's default init;
    `kernel` is torch's weight `(out, in, kh, kw)` stored as `(kh, kw, in, out)`.

    Padding is explicit and symmetric: Flax 'SAME' pads (0, 1) on even inputs at stride 2.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding: int = 0,
                 bias: bool = True, rngs: nnx.Rngs):
        init = _torch_uniform(1.0 / math.sqrt(in_ch * kernel * kernel))
        self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, in_ch, out_ch)))
        self.bias = nnx.Param(init(rngs.params(), (out_ch,))) if bias else None
        self.stride, self.padding = stride, padding

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv2d_nhwc(x, self.kernel[...].astype(x.dtype), self.stride, self.padding)
        return y if self.bias is None else y + self.bias[...].astype(x.dtype)


def _conv_t(x, k, stride: int, padding: int):
    """torch ConvTranspose2d on NHWC with k (kh, kw, in, out): a conv of the dilated input
    with the flipped kernel."""
    kh, kw = k.shape[:2]
    pad = ((kh - 1 - padding,) * 2, (kw - 1 - padding,) * 2)
    return jax.lax.conv_transpose(x, k[::-1, ::-1], (stride, stride), pad, dimension_numbers=_NHWC)


def _valid_conv(x, k):
    return _conv(x, k, 1, 0)


def _conv_t_by_phases(x, k, stride: int, padding: int, correlate=_valid_conv):
    """`_conv_t` as stride**2 small convs of the undilated input, one per output phase,
    interleaved; for kernels that are multiples of the stride and outputs that are too.

    Output o = s*a + r receives x[i] k[t] for t = s*(a - i) + r + p: taps t = s*m + q with
    q = (r + p) % s, from x[a + (r + p) // s - m]. The dilated conv multiplies stride**2
    times as many zeros; UNet++'s k4 s2 p1 upsampling at 64->128 px, 256->128 channels:
    79 -> 63 ms forward, 62 -> 52 ms input gradient (torch: 57 ms forward). Each phase is
    `correlate(x_padded, k_phase)`, a valid stride-1 correlation."""
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


def _by_phases(kernel: int, stride: int, padding: int) -> bool:
    return stride > 1 and kernel % stride == 0 and (kernel - 2 * padding) % stride == 0


def _transposed_conv(x, k, stride: int, padding: int, correlate=_valid_conv):
    if _by_phases(k.shape[0], stride, padding):
        return _conv_t_by_phases(x, k, stride, padding, correlate)
    return _conv_t(x, k, stride, padding)


# torch ConvTranspose2d, NHWC / (kh, kw, in, out).
conv_transpose_nhwc = _with_tapwise_kernel_grad(_transposed_conv, sliding_first=False)
# The same, each output phase's 2x2 correlation by Winograd F(2x2, 2x2) in the forward.
_conv_transpose_winograd_phases = _with_tapwise_kernel_grad(
    _transposed_conv, sliding_first=False,
    primal=functools.partial(_transposed_conv, correlate=winograd.correlate2x2))


def transposed_conv2d_nhwc(x: jax.Array, k: jax.Array, stride: int, padding: int) -> jax.Array:
    """`conv_transpose_nhwc`; on CPU in float32/64, kernels of twice the stride (UNet++'s k4 s2:
    2x2 taps per output phase) take Winograd phases in the forward (9 GEMMs per phase instead
    of 16: 128->256 px, 128->64 channels, batch 2: 55 -> 45 ms; 32->64 px, 512->256: 53 ->
    32 ms; same numbers to float rounding)."""
    default = lambda x, k: conv_transpose_nhwc(x, k, stride, padding)  # noqa: E731
    if (x.dtype not in (jnp.float32, jnp.float64) or k.shape[0] != 2 * stride
            or not _by_phases(k.shape[0], stride, padding)):
        return default(x, k)
    cpu = lambda x, k: _conv_transpose_winograd_phases(x, k, stride, padding)  # noqa: E731
    return jax.lax.platform_dependent(x, k, cpu=cpu, default=default)


class ConvTranspose2d(nnx.Module):
    """torch.nn.ConvTranspose2d(in_ch, out_ch, kernel, stride, padding), NHWC.

    `kernel` is torch's weight `(in, out, kh, kw)` stored as `(kh, kw, in, out)`.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int, padding: int = 0,
                 rngs: nnx.Rngs):
        # torch computes fan_in from weight.size(1) = out_ch for transposed convs.
        bound = 1.0 / math.sqrt(out_ch * kernel * kernel)
        init = _torch_uniform(bound)
        self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, in_ch, out_ch)))
        self.bias = nnx.Param(init(rngs.params(), (out_ch,)))
        self.stride = stride
        self.padding = padding

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel[...].astype(x.dtype)
        kh, kw, _, out_ch = k.shape
        if kh == kw == self.stride and self.padding == 0:
            # Non-overlapping taps: one (B*H*W, C) x (C, kh*kw*out) GEMM + depth-to-space. Same
            # numbers as the generic transposed conv, and its gradient is far cheaper on
            # XLA:CPU. As a 2-D matmul, not an einsum: XLA then computes the einsum's
            # transpose, (kh*kw*out, B*H*W), and reorders it element by element (2.4x slower).
            b, h, w, in_ch = x.shape
            taps = k.transpose(2, 0, 1, 3).reshape(in_ch, kh * kw * out_ch)
            y = (x.reshape(-1, in_ch) @ taps).reshape(b, h, w, kh, kw, out_ch)
            y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * kh, w * kw, out_ch)
        else:
            y = transposed_conv2d_nhwc(x, k, self.stride, self.padding)
        return y + self.bias[...].astype(x.dtype)


BN_EPS = 1e-5


def _affine(x, mean, var, gamma, beta):
    scale = gamma * jax.lax.rsqrt(var + BN_EPS)
    return x * scale + (beta - mean * scale)


@jax.custom_vjp
def batch_norm_train(x: jax.Array, gamma: jax.Array, beta: jax.Array):
    """Training-mode BatchNorm2d over (B, H, W): (y, batch mean, biased batch variance)."""
    mean = x.mean(axis=(0, 1, 2))
    var = jnp.square(x - mean).mean(axis=(0, 1, 2))
    return _affine(x, mean, var, gamma, beta), mean, var


def _batch_norm_train_fwd(x, gamma, beta):
    out = batch_norm_train(x, gamma, beta)
    return out, (x, gamma, out[1], out[2])


def _batch_norm_train_bwd(residuals, cotangents):
    """The closed-form gradient, two reductions and one elementwise pass (XLA:CPU runs
    autodiff's version of the forward in more passes: 3% of a semseg_unet train step)."""
    x, gamma, mean, var = residuals
    dy, dmean, dvar = cotangents
    n = x.size // x.shape[-1]
    rstd = jax.lax.rsqrt(var + BN_EPS)
    xhat = (x - mean) * rstd
    dbeta = dy.sum(axis=(0, 1, 2))
    dgamma = (dy * xhat).sum(axis=(0, 1, 2))
    a = gamma * rstd
    dx = a * dy + (dmean - a * dbeta) / n + xhat * ((2 * dvar / rstd - a * dgamma) / n)
    return dx, dgamma, dbeta


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nnx.Module):
    """torch.nn.BatchNorm2d(num_features) (eps 1e-5, momentum 0.1), NHWC.

    Training mode normalises with the biased batch variance and, like torch, updates
    `var` with the unbiased one and counts `num_batches_tracked`. Statistics are computed
    in float32 at least, whatever the compute dtype. Under `jax.jit` with the batch sharded
    over a mesh, the batch mean is global, so the statistics are synchronised.
    """

    def __init__(self, num_features: int, *, use_running_average: bool = False,
                 rngs: nnx.Rngs | None = None):
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))
        self.use_running_average = use_running_average

    def __call__(self, x: jax.Array) -> jax.Array:
        stat_dtype = jnp.promote_types(x.dtype, self.mean[...].dtype)
        xs = x.astype(stat_dtype)
        gamma, beta = self.scale[...].astype(stat_dtype), self.bias[...].astype(stat_dtype)
        if self.use_running_average:
            y = _affine(xs, self.mean[...].astype(stat_dtype), self.var[...].astype(stat_dtype),
                        gamma, beta)
        else:
            y, mean, var = batch_norm_train(xs, gamma, beta)
            n = x.size // x.shape[-1]
            unbiased = jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
            mean = jax.lax.stop_gradient(mean)
            self.mean[...] = (0.9 * self.mean[...] + 0.1 * mean).astype(self.mean[...].dtype)
            self.var[...] = (0.9 * self.var[...] + 0.1 * unbiased).astype(self.var[...].dtype)
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        return y.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x: jax.Array, kernel: int, stride: int, right_pad: tuple[int, int]) -> jax.Array:
    """Max-pooling with -inf padding on the bottom / right only (windows that do not fit are
    dropped). The gradient goes to the first maximum of each window in row-major order, as
    torch's; it is written as compares and selects because XLA:CPU's select-and-scatter is
    3-8x slower than torch's backward (2x2 pool at 248x248x16, batch 2: 22 -> 1.5 ms;
    ResNet's 3x3 stride-2 pool at 128x128x64: 37 -> 7 ms)."""
    return nnx.max_pool(x, (kernel, kernel), strides=(stride, stride),
                        padding=((0, right_pad[0]), (0, right_pad[1])))


def _max_pool_fwd(x, kernel, stride, right_pad):
    y = _max_pool(x, kernel, stride, right_pad)
    return y, (x, y)


def _max_pool_bwd(kernel, stride, right_pad, residuals, dy):
    """Tap (i, j) = (s*di + p, s*dj + q) of output (h, w) reads input (s*(h + di) + p,
    s*(w + dj) + q): the gradient is assembled on the input viewed as (blocks, phase) per
    axis, one select per shift (di, dj)."""
    x, y = residuals
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
    # Phase iotas, not NumPy constants: iotas fuse into the selects, constants are loaded (2x).
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
    return (jax.lax.pad(dx, zero, [(0, 0, 0), (0, h - hp, 0), (0, w - wp, 0), (0, 0, 0)]),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool2(x: jax.Array) -> jax.Array:
    """nn.MaxPool2d(2): floors odd sizes."""
    return _max_pool(x, 2, 2, (0, 0))


def max_pool3_s2_ceil(x: jax.Array) -> jax.Array:
    """nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)."""

    def right_pad(n: int) -> int:
        out = -(-(n - 3) // 2) + 1
        if (out - 1) * 2 >= n:  # torch drops a window that would start in the padding
            out -= 1
        return max(0, (out - 1) * 2 + 3 - n)

    return _max_pool(x, 3, 2, (right_pad(x.shape[1]), right_pad(x.shape[2])))


def upsample_nearest2(x: jax.Array) -> jax.Array:
    """nn.Upsample(scale_factor=2) / nn.UpsamplingNearest2d(2)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _align_corners_weights(n_in: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For 2x upsampling with align_corners: each output's two source indices and the
    weight of the second, sampling at dst * (n_in-1) / (2 n_in-1) computed in `dtype` as
    torch does (float32 for float32 and bfloat16 inputs)."""
    n_out = 2 * n_in
    dtype = np.dtype(jnp.promote_types(dtype, jnp.float32))
    scale = dtype.type((n_in - 1) / (n_out - 1))
    src = np.arange(n_out).astype(dtype) * scale
    lo = np.floor(src).astype(np.int32)
    return lo, np.minimum(lo + 1, n_in - 1), src - lo


def _lerp_axis(x: jax.Array, axis: int) -> jax.Array:
    """torch's `(1 - l) * x[lo] + l * x[hi]` along `axis`, doubling its size."""
    lo, hi, frac = _align_corners_weights(x.shape[axis], x.dtype)
    shape = [1] * x.ndim
    shape[axis] = frac.size
    frac = jnp.asarray(frac.reshape(shape), x.dtype)
    return jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac


def _lerp_axis_transpose(dy: jax.Array, axis: int) -> jax.Array:
    """The adjoint of `_lerp_axis`: each input gathers, with its weights, the few outputs it
    feeds (at most 4), in ascending output order as torch's backward accumulates them.
    XLA:CPU's scatter-add (autodiff's adjoint of `jnp.take`) is 2-4x slower, and the same
    adjoint as a dense matmul 10-20x (2x256x256x64: 65 ms as matmuls, 3 ms as gathers)."""
    n_in = dy.shape[axis] // 2
    lo, hi, frac = _align_corners_weights(n_in, dy.dtype)
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


@jax.custom_vjp
def upsample_bilinear2(x: jax.Array) -> jax.Array:
    """nn.UpsamplingBilinear2d(scale_factor=2), i.e. bilinear with align_corners=True.

    `jax.image.resize` uses half-pixel centres (align_corners=False) and differs by O(1).
    Forward: two gathers and lerps, as torch's kernel; gradient: gathers too.
    """
    return _lerp_axis(_lerp_axis(x, 1), 2)


upsample_bilinear2.defvjp(lambda x: (upsample_bilinear2(x), None),
                          lambda _, dy: (_lerp_axis_transpose(_lerp_axis_transpose(dy, 1), 2),))


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
