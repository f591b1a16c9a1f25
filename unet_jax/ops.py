"""The primitive ops under `unet_jax.nn`, NHWC / HWIO: plain `jax.lax` with autodiff's
gradients on every backend, and the one hook where a CPU algorithm replaces them on CPU.

The CPU algorithm is chosen at trace time where JAX's default backend is the CPU (not under
`platform_dependent`: its conditional around every op made the CPU train step 2.5x slower);
programs for GPU/TPU are traced with the CPU kernels off (`unet_jax.programs` does it)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax.interpolation import align_corners_weights
from unet_jax.kernels import cpu

_NHWC = ("NHWC", "HWIO", "NHWC")


def _with_cpu_kernel(op: str, plain, *operands, **static):
    """`plain(*operands)`; on CPU, while the CPU kernels are enabled, the algorithm they
    choose for this op and shape instead (the same function to float rounding)."""
    fast = cpu.choose(op, plain, *operands, **static) if cpu.enabled() else None
    return (fast or plain)(*operands)


def _compiled_when_eager(arrays: int):
    """Run op `fn(*arrays, *static)` called on concrete arrays as one cached compiled
    function per static arguments (and switch setting), instead of tracing its branches and
    compiling them again on every eager call."""

    def decorate(fn):
        @functools.cache
        def compiled(static: tuple, kwargs: tuple, cpu_kernels: bool):
            return jax.jit(lambda *xs: fn(*xs, *static, **dict(kwargs)))

        @functools.wraps(fn)
        def op(*args, **kwargs):
            xs, static = args[:arrays], args[arrays:]
            if any(isinstance(x, jax.core.Tracer) for x in xs):
                return fn(*args, **kwargs)
            return compiled(static, tuple(sorted(kwargs.items())), cpu.enabled())(*xs)

        return op

    return decorate


def _conv(x, k, stride: int, padding: int):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), ((padding, padding),) * 2,
                                        dimension_numbers=_NHWC)


@_compiled_when_eager(arrays=2)
def conv2d(x: jax.Array, k: jax.Array, stride: int, padding: int) -> jax.Array:
    """torch `F.conv2d(x, k, stride=stride, padding=padding)`: cross-correlation with
    symmetric zero padding."""
    plain = functools.partial(_conv, stride=stride, padding=padding)
    return _with_cpu_kernel("conv2d", plain, x, k, stride=stride, padding=padding)


def _conv_transpose(x, k, stride: int, padding: int):
    # a conv of the input dilated by `stride` with the flipped kernel, padded k - 1 - p
    kh, kw = k.shape[:2]
    pad = ((kh - 1 - padding,) * 2, (kw - 1 - padding,) * 2)
    return jax.lax.conv_transpose(x, k[::-1, ::-1], (stride, stride), pad, dimension_numbers=_NHWC)


@_compiled_when_eager(arrays=2)
def conv_transpose2d(x: jax.Array, k: jax.Array, stride: int, padding: int) -> jax.Array:
    """torch `F.conv_transpose2d` with the weight stored (kh, kw, in, out)."""
    plain = functools.partial(_conv_transpose, stride=stride, padding=padding)
    return _with_cpu_kernel("conv_transpose2d", plain, x, k, stride=stride, padding=padding)


def _conv3d(x, k, stride: tuple, padding: tuple):
    return jax.lax.conv_general_dilated(x, k, stride, padding,
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


@_compiled_when_eager(arrays=2)
def conv3d(x: jax.Array, k: jax.Array, stride: tuple, padding: tuple) -> jax.Array:
    """torch `F.conv3d(x, k, stride=stride, padding=...)` channels-last, the weight stored
    (kd, kh, kw, in, out), `padding` ((front, back), (top, bottom), (left, right)) zeros."""
    stride, padding = tuple(stride), tuple(tuple(p) for p in padding)
    plain = functools.partial(_conv3d, stride=stride, padding=padding)
    return _with_cpu_kernel("conv3d", plain, x, k, stride=stride, padding=padding)


def _conv_transpose_taps(x, k):
    # a conv of the input dilated by the stride (= the kernel) with the flipped kernel, padded k - 1
    dn = k.ndim - 2
    s = "DHW"[3 - dn:]
    return jax.lax.conv_general_dilated(x, jnp.flip(k, tuple(range(dn))), (1,) * dn,
                                        [(n - 1, n - 1) for n in k.shape[:dn]], lhs_dilation=k.shape[:dn],
                                        dimension_numbers=(f"N{s}C", f"{s}IO", f"N{s}C"))


@_compiled_when_eager(arrays=2)
def conv_transpose_taps(x: jax.Array, k: jax.Array) -> jax.Array:
    """torch `F.conv_transpose{1,2,3}d` with stride equal to the kernel and no padding (taps
    that do not overlap: nnU-Net's and MONAI's up-convolutions), channels-last, the weight
    stored (*k, in, out)."""
    return _with_cpu_kernel("conv_transpose_taps", _conv_transpose_taps, x, k)


def _max_pool(x, kernel: int, stride: int, right_pad: tuple[int, int]):
    pad = ((0, 0), (0, right_pad[0]), (0, right_pad[1]), (0, 0))
    return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max,
                                 (1, kernel, kernel, 1), (1, stride, stride, 1), pad)


@_compiled_when_eager(arrays=1)
def max_pool(x: jax.Array, kernel: int, stride: int, right_pad: tuple[int, int]) -> jax.Array:
    """Max-pooling with -inf padding on the bottom / right only (windows that do not fit are
    dropped); the gradient goes to the first maximum of each window, as torch's."""
    plain = functools.partial(_max_pool, kernel=kernel, stride=stride, right_pad=right_pad)
    return _with_cpu_kernel("max_pool", plain, x, kernel=kernel, stride=stride)


def _lerp_axis(x: jax.Array, axis: int) -> jax.Array:
    """torch's `(1 - l) * x[lo] + l * x[hi]` along `axis`, doubling its size."""
    lo, hi, frac = align_corners_weights(x.shape[axis], x.dtype)
    shape = [1] * x.ndim
    shape[axis] = frac.size
    frac = jnp.asarray(frac.reshape(shape), x.dtype)
    return jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac


def _upsample_bilinear2(x):
    return _lerp_axis(_lerp_axis(x, 1), 2)


@_compiled_when_eager(arrays=1)
def upsample_bilinear2(x: jax.Array) -> jax.Array:
    """2x bilinear upsampling with align_corners=True: two gathers and lerps, as torch's kernel."""
    return _with_cpu_kernel("upsample_bilinear2", _upsample_bilinear2, x)
