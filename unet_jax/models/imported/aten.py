"""The ATen ops of imported networks, with torch's semantics, on `layout.T` values.

Every op is `fn(ctx, *args, **kwargs)` with torch's argument order; tensors arrive as `T`,
symbolic sizes as Python ints. Convolutions, pools, norms and resampling run channels-last
(2-D convs, transposed convs, max-pools and 2x bilinear upsampling through `unet_jax.ops`,
so the CPU kernels apply); views, permutes and matmuls run in torch's layout.
`OPS` is the table; `SHAPE_OPS` the Python functions on symbolic sizes."""

import math
import operator

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import ops
from unet_jax.models.imported.layout import Kernel, T, aligned, channels_last, like, reduced
from unet_jax.nn.conv import add_bias

OPS: dict = {}
_SPATIAL = {3: "W", 4: "HW", 5: "DHW"}


def op(*names: str):
    def register(fn):
        for name in names:
            OPS[name] = fn
        return fn
    return register


def _cast(w: T, x: T) -> jax.Array:
    return w.a.astype(x.dtype)


def _weight(w, x: T, perm: tuple[int, ...]) -> jax.Array:
    """A weight with torch's axes in the order `perm`, in x's dtype: as held when it is a
    `Kernel` held so (no transpose in the program)."""
    a = w.held(perm) if isinstance(w, Kernel) else jnp.transpose(w.a, perm)
    return a.astype(x.dtype)


def _acc(x: T):
    """The dtype statistics are computed in: float32 at least."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _tuple(v, n: int) -> tuple[int, ...]:
    v = [v] if isinstance(v, int) else list(v)
    return tuple(v * n if len(v) == 1 else v)


def _numbers(dn: int) -> tuple[str, str, str]:
    s = _SPATIAL[dn + 2]
    return (f"N{s}C", f"{s}IO", f"N{s}C")


# --- convolutions ---------------------------------------------------------------------------

def _conv_padding(padding, kernel, dilation):
    if padding == "valid":
        return [(0, 0)] * len(kernel)
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return [(t // 2, t - t // 2) for t in total]
    return [(p, p) for p in _tuple(padding, len(kernel))]


@op("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default",
    "aten.conv1d.padding", "aten.conv2d.padding", "aten.conv3d.padding")
def conv(ctx, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv{1,2,3}d; the weight (O, I/g, *k) is used as (*k, I/g, O)."""
    dn = w.rank - 2
    kernel = w.shape[2:]
    stride, dilation = _tuple(stride, dn), _tuple(dilation, dn)
    pads = _conv_padding(padding, kernel, dilation)
    k = _weight(w, x, (*range(2, w.rank), 1, 0))
    xs = x.last()
    if (dn == 2 and groups == 1 and set(dilation) == {1} and len(set(stride)) == 1
            and len({p for pair in pads for p in pair}) == 1):
        y = ops.conv2d(xs, k, stride[0], pads[0][0])
    elif dn == 3 and groups == 1 and set(dilation) == {1}:
        y = ops.conv3d(xs, k, tuple(stride), tuple(map(tuple, pads)))
    else:
        y = jax.lax.conv_general_dilated(xs, k, stride, pads, rhs_dilation=dilation,
                                         feature_group_count=groups, dimension_numbers=_numbers(dn))
    return channels_last(y if b is None else add_bias(y, b.a))


@op("aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input")
def conv_transpose(ctx, x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """F.conv_transpose{1,2,3}d; the weight (I, O/g, *k)."""
    dn = w.rank - 2
    kernel = w.shape[2:]
    stride, padding = _tuple(stride, dn), _tuple(padding, dn)
    output_padding, dilation = _tuple(output_padding, dn), _tuple(dilation, dn)
    xs = x.last()
    if (dn == 2 and groups == 1 and set(dilation) == {1} and set(output_padding) == {0}
            and len(set(stride)) == 1 and len(set(padding)) == 1 and len(set(kernel)) == 1):
        y = ops.conv_transpose2d(xs, _weight(w, x, (2, 3, 0, 1)), stride[0], padding[0])
    elif (groups == 1 and set(dilation) == {1} and set(output_padding) == {0} and set(padding) == {0}
          and tuple(stride) == tuple(kernel)):
        y = ops.conv_transpose_taps(xs, _weight(w, x, (*range(2, w.rank), 0, 1)))
    else:
        cin, cout_g = w.shape[0], w.shape[1]
        if groups == 1:
            k = _weight(w, x, (*range(2, w.rank), 0, 1))
        else:  # (g, I/g, O/g, *k) -> (*k, I/g, g, O/g) -> (*k, I/g, O)
            k = jnp.reshape(_weight(w, x, tuple(range(w.rank))), (groups, cin // groups, cout_g, *kernel))
            k = jnp.transpose(k, (*range(3, 3 + dn), 1, 0, 2))
            k = k.reshape(*kernel, cin // groups, groups * cout_g)
        k = jnp.flip(k, axis=tuple(range(dn)))  # spatially flipped
        pads = [(d * (kk - 1) - p, d * (kk - 1) - p + op_)
                for kk, d, p, op_ in zip(kernel, dilation, padding, output_padding, strict=True)]
        y = jax.lax.conv_general_dilated(xs, k, (1,) * dn, pads, lhs_dilation=stride,
                                         rhs_dilation=dilation, feature_group_count=groups,
                                         dimension_numbers=_numbers(dn))
    return channels_last(y if b is None else add_bias(y, b.a))


@op("aten.convolution.default")
def convolution(ctx, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    if transposed:
        return conv_transpose(ctx, x, w, b, stride, padding, output_padding, groups, dilation)
    return conv(ctx, x, w, b, stride, padding, dilation, groups)


@op("aten.linear.default")
def linear(ctx, x, w, b=None):
    """F.linear: x @ w.T, the weight (O, I) contracted on its last axis as held."""
    xa = x.torch()
    y = jax.lax.dot_general(xa, _cast(w, x), (((xa.ndim - 1,), (1,)), ((), ())))
    return T(y if b is None else y + b.a.astype(y.dtype))


# --- normalisation --------------------------------------------------------------------------

def _channel_shape(x: T) -> tuple[int, ...]:
    """The shape that broadcasts a per-channel vector over `x`'s array."""
    shape = [1] * x.rank
    shape[x.axis(1)] = x.shape[1]
    return tuple(shape)


def _normalize(x: T, mean, var, eps, weight, bias, acc):
    """(x - mean) / sqrt(var + eps) * weight + bias as one multiply-add per element (the
    per-channel scale and shift computed first), in `acc`, back in x's dtype."""
    scale = jax.lax.rsqrt(var + jnp.asarray(eps, acc))
    if weight is not None:
        scale = scale * weight.a.astype(acc).reshape(_channel_shape(x))
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.a.astype(acc).reshape(_channel_shape(x))
    return like(x, (x.a.astype(acc) * scale + shift).astype(x.dtype))


def _update(ctx, names: dict, mean, var, count: int):
    """The running statistics' update of torch's _BatchNorm / _InstanceNorm in training."""
    factor = ctx.node.attrs.get("momentum")
    nbt = names.get("num_batches_tracked")
    if nbt is not None:
        tracked = ctx.read(nbt) + 1
        ctx.write(nbt, tracked)
        if factor is None:  # momentum=None: the cumulative average
            factor = 1.0 / tracked
    factor = 0.0 if factor is None else factor
    mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    unbiased = var * (count / max(count - 1, 1))
    for key, batch in (("running_mean", mean), ("running_var", unbiased)):
        old = ctx.read(names[key])
        ctx.write(names[key], ((1 - factor) * old + factor * batch).astype(old.dtype))


@op("aten.batch_norm.default")
def batch_norm(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn=False):
    """F.batch_norm: batch statistics in training mode (or without running statistics),
    and the running statistics updated as torch updates them."""
    acc = jnp.promote_types(_acc(x), weight.dtype if weight is not None else _acc(x))
    if running_mean is not None and not ctx.training:
        shape = _channel_shape(x)
        return _normalize(x, running_mean.a.astype(acc).reshape(shape),
                          running_var.a.astype(acc).reshape(shape), eps, weight, bias, acc)
    axes = tuple(i for i in range(x.rank) if i != x.axis(1))
    xa = x.a.astype(acc)
    mean = jnp.mean(xa, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xa - mean), axis=axes, keepdims=True)
    if running_mean is not None:
        _update(ctx, ctx.node.attrs["buffers"], mean.reshape(-1), var.reshape(-1), x.a.size // x.shape[1])
    return _normalize(x, mean, var, eps, weight, bias, acc)


@op("aten.instance_norm.default")
def instance_norm(ctx, x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                  cudnn=False):
    """F.instance_norm: per-sample statistics in training mode or without running statistics;
    the running ones (track_running_stats) averaged over the batch."""
    acc = _acc(x)
    if running_mean is not None and not ctx.training:
        shape = _channel_shape(x)
        return _normalize(x, running_mean.a.astype(acc).reshape(shape),
                          running_var.a.astype(acc).reshape(shape), eps, weight, bias, acc)
    axes = tuple(i for i in range(1, x.rank) if i != x.axis(1))
    xa = x.a.astype(acc)
    mean = jnp.mean(xa, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xa - mean), axis=axes, keepdims=True)
    if running_mean is not None:
        per_sample = (x.shape[0], x.shape[1])
        _update(ctx, ctx.node.attrs["buffers"], mean.reshape(per_sample).mean(0),
                var.reshape(per_sample).mean(0), x.a.size // (x.shape[0] * x.shape[1]))
    return _normalize(x, mean, var, eps, weight, bias, acc)


@op("aten.group_norm.default")
def group_norm(ctx, x, groups, weight=None, bias=None, eps=1e-5, cudnn=False):
    """F.group_norm: channels split into `groups` consecutive groups."""
    acc = _acc(x)
    xs = x.last() if x.rank >= 3 else x.torch()
    xs = xs if x.rank >= 3 else xs[:, None, :]  # (N, C) -> (N, 1, C)
    n, c = xs.shape[0], xs.shape[-1]
    g = jnp.reshape(xs.astype(acc), (n, -1, groups, c // groups))
    mean = jnp.mean(g, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=(1, 3), keepdims=True)
    y = ((g - mean) * jax.lax.rsqrt(var + jnp.asarray(eps, acc))).reshape(xs.shape)
    if weight is not None:
        y = y * weight.a.astype(acc)
    if bias is not None:
        y = y + bias.a.astype(acc)
    y = y.astype(x.dtype)
    return channels_last(y) if x.rank >= 3 else T(y[:, 0, :])


@op("aten.layer_norm.default")
def layer_norm(ctx, x, shape, weight=None, bias=None, eps=1e-5, cudnn=False):
    """F.layer_norm over the last len(shape) dims, in torch's layout."""
    acc = _acc(x)
    xa = x.torch().astype(acc)
    axes = tuple(range(x.rank - len(shape), x.rank))
    mean = jnp.mean(xa, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xa - mean), axis=axes, keepdims=True)
    y = (xa - mean) * jax.lax.rsqrt(var + jnp.asarray(eps, acc))
    if weight is not None:
        y = y * weight.a.astype(acc)
    if bias is not None:
        y = y + bias.a.astype(acc)
    return T(y.astype(x.dtype))


@op("aten.dropout.default", "aten.dropout_.default", "aten.feature_dropout.default",
    "aten.feature_dropout_.default", "aten.alpha_dropout.default")
def dropout(ctx, x, p, train=False):
    """nn.Dropout / Dropout2d / Dropout3d: active in training mode (the module's mode, as
    torch's modules pass `self.training`), keys from the model's dropout key."""
    if not ctx.training or p == 0:
        return x
    if ctx.node.op.startswith("aten.alpha"):
        raise NotImplementedError("alpha_dropout in training mode is not supported")
    shape = x.a.shape
    if "feature" in ctx.node.op:  # one draw per (sample, channel)
        shape = tuple(s if i in (0, x.axis(1)) else 1 for i, s in enumerate(shape))
    keep = jax.random.bernoulli(ctx.dropout_key(), 1 - p, shape)
    return like(x, jnp.where(keep, x.a / (1 - p), 0).astype(x.dtype))


# --- activations and elementwise ------------------------------------------------------------

def _unary(fn):
    return lambda ctx, x, *args, **kw: like(x, fn(x.a, *args, **kw))


for _names, _fn in {
    ("relu", "relu_"): jax.nn.relu,
    ("relu6", "relu6_"): lambda a: jnp.clip(a, 0, 6),
    ("sigmoid", "sigmoid_"): jax.nn.sigmoid,
    ("tanh", "tanh_"): jnp.tanh,
    ("silu", "silu_"): jax.nn.silu,
    ("hardswish", "hardswish_"): lambda a: a * jnp.clip(a + 3, 0, 6) / 6,
    ("hardsigmoid", "hardsigmoid_"): lambda a: jnp.clip(a + 3, 0, 6) / 6,
    ("mish", "mish_"): lambda a: a * jnp.tanh(jax.nn.softplus(a)),
    ("exp",): jnp.exp, ("sqrt",): jnp.sqrt, ("rsqrt",): jax.lax.rsqrt, ("neg",): jnp.negative,
    ("abs",): jnp.abs, ("erf",): jax.scipy.special.erf, ("log",): jnp.log,
    ("reciprocal",): jnp.reciprocal,
    ("clone", "contiguous", "detach", "alias", "lift_fresh_copy", "detach_"): lambda a, *_, **__: a,
}.items():
    op(*[f"aten.{n}.default" for n in _names])(_unary(_fn))


@op("aten.leaky_relu.default", "aten.leaky_relu_.default")
def leaky_relu(ctx, x, slope=0.01):
    return like(x, jnp.where(x.a >= 0, x.a, x.a * slope))


@op("aten.elu.default", "aten.elu_.default")
def elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    return like(x, scale * jnp.where(x.a > 0, x.a, alpha * jnp.expm1(x.a * input_scale)))


@op("aten.celu.default", "aten.celu_.default")
def celu(ctx, x, alpha=1.0):
    return like(x, jnp.where(x.a > 0, x.a, alpha * jnp.expm1(x.a / alpha)))


@op("aten.selu.default", "aten.selu_.default")
def selu(ctx, x):
    return like(x, jax.nn.selu(x.a))


@op("aten.gelu.default", "aten.gelu_.default")
def gelu(ctx, x, approximate="none"):
    return like(x, jax.nn.gelu(x.a, approximate=approximate == "tanh"))


@op("aten.softplus.default")
def softplus(ctx, x, beta=1.0, threshold=20.0):
    bx = x.a * beta
    return like(x, jnp.where(bx > threshold, x.a, jax.nn.softplus(bx) / beta))


@op("aten.hardtanh.default", "aten.hardtanh_.default", "aten.clamp.default", "aten.clamp_.default",
    "aten.clip.default", "aten.clip_.default")
def clamp(ctx, x, lo=None, hi=None):
    return like(x, jnp.clip(x.a, lo, hi) if not ctx.node.op.startswith("aten.hardtanh")
                else jnp.clip(x.a, -1.0 if lo is None else lo, 1.0 if hi is None else hi))


@op("aten.clamp_min.default", "aten.clamp_min_.default")
def clamp_min(ctx, x, lo):
    return like(x, jnp.maximum(x.a, lo))


@op("aten.prelu.default", "aten._prelu_kernel.default")
def prelu(ctx, x, weight):
    w = weight.a.astype(x.dtype)
    if w.size > 1:
        w = w.reshape(_channel_shape(x))
    return like(x, jnp.where(x.a >= 0, x.a, w * x.a))


def _binary(fn):
    def apply(ctx, a, b, alpha=None, **_):
        if alpha is not None:
            b = T(b.a * alpha, b.cl) if isinstance(b, T) else b * alpha
        (x, y), cl = aligned([a, b])
        return T(fn(x, y), cl)
    return apply


for _name, _fn in {"add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.divide,
                   "maximum": jnp.maximum, "minimum": jnp.minimum, "pow": jnp.power,
                   "eq": jnp.equal, "gt": jnp.greater, "lt": jnp.less, "ge": jnp.greater_equal,
                   "le": jnp.less_equal}.items():
    op(*[f"aten.{_name}{inplace}.{overload}" for inplace in ("", "_")
         for overload in ("Tensor", "Scalar", "Tensor_Scalar", "Tensor_Tensor", "default")])(_binary(_fn))


@op("aten.rsub.Scalar", "aten.rsub.Tensor")
def rsub(ctx, a, b, alpha=1):
    return _binary(jnp.subtract)(ctx, b, a if alpha == 1 else (T(a.a * alpha, a.cl)))


@op("aten.where.self")
def where(ctx, cond, a, b):
    (c, x, y), cl = aligned([cond, a, b])
    return T(jnp.where(c, x, y), cl)


@op("aten.softmax.int", "aten._softmax.default", "aten.log_softmax.int", "aten._log_softmax.default")
def softmax(ctx, x, dim, half_or_dtype=None):
    fn = jax.nn.log_softmax if "log_softmax" in ctx.node.op else jax.nn.softmax
    return like(x, fn(x.a, axis=x.axis(dim)))


# --- reductions -----------------------------------------------------------------------------

def _reduce(fn):
    def apply(ctx, x, dims=None, keepdim=False, dtype=None):
        dims = range(x.rank) if dims is None or dims == [] else ([dims] if isinstance(dims, int) else dims)
        y = fn(x.a, axis=x.axes(dims), keepdims=keepdim)
        return like(x, y) if keepdim else reduced(x, y, tuple(dims))
    return apply


for _name, _fn in {"mean": jnp.mean, "sum": jnp.sum, "amax": jnp.max, "amin": jnp.min}.items():
    op(f"aten.{_name}.dim", f"aten.{_name}.dim_IntList", f"aten.{_name}.default")(_reduce(_fn))


# --- pooling and resampling -----------------------------------------------------------------

def _pool_geometry(n, k, s, p, d, ceil):
    """torch's pooled size and the right padding that makes every window exist."""
    span = d * (k - 1) + 1
    out = (n + 2 * p - span + ((s - 1) if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out, max(0, (out - 1) * s + span - n - p)


@op("aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default")
def max_pool(ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    dn = x.rank - 2
    kernel = _tuple(kernel, dn)
    stride = _tuple(stride, dn) if stride not in ((), []) else kernel
    padding, dilation = _tuple(padding, dn), _tuple(dilation, dn)
    xs = x.last()
    geometry = [_pool_geometry(n, k, s, p, d, ceil_mode) for n, k, s, p, d in
                zip(xs.shape[1:-1], kernel, stride, padding, dilation, strict=True)]
    if (dn == 2 and set(padding) == {0} and set(dilation) == {1} and len(set(kernel)) == 1
            and len(set(stride)) == 1):
        return channels_last(ops.max_pool(xs, kernel[0], stride[0], tuple(r for _, r in geometry)))
    pads = ((0, 0), *[(p, r) for p, (_, r) in zip(padding, geometry, strict=True)], (0, 0))
    y = jax.lax.reduce_window(xs, np.array(-np.inf, xs.dtype), jax.lax.max, (1, *kernel, 1),
                              (1, *stride, 1), pads, window_dilation=(1, *dilation, 1))
    return channels_last(y)


@op("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default")
def max_pool_with_indices(ctx, *args, **kwargs):
    ctx.require_unused(1, "the indices of max_pool with return_indices=True")
    return (max_pool(ctx, *args, **kwargs), None)


def _divisors(n, k, s, p, include_pad, out):
    starts = np.arange(out) * s - p
    ends = np.minimum(starts + k, n + p)
    full = ends - starts
    valid = np.minimum(ends, n) - np.maximum(starts, 0)
    return full if include_pad else valid


@op("aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default")
def avg_pool(ctx, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None):
    dn = x.rank - 2
    kernel = _tuple(kernel, dn)
    stride = _tuple(stride, dn) if stride not in ((), [], None) else kernel
    padding = _tuple(padding, dn)
    xs = x.last()
    sizes = xs.shape[1:-1]
    geometry = [_pool_geometry(n, k, s, p, 1, ceil_mode)
                for n, k, s, p in zip(sizes, kernel, stride, padding, strict=True)]
    pads = ((0, 0), *[(p, r) for p, (_, r) in zip(padding, geometry, strict=True)], (0, 0))
    total = jax.lax.reduce_window(xs, np.array(0, xs.dtype), jax.lax.add, (1, *kernel, 1),
                                  (1, *stride, 1), pads)
    if divisor_override:
        return channels_last(total / divisor_override)
    divisor = np.ones((), np.float64)
    for axis, (n, k, s, p, (out, _)) in enumerate(zip(sizes, kernel, stride, padding, geometry,
                                                      strict=True)):
        d = _divisors(n, k, s, p, count_include_pad, out)
        divisor = divisor[..., None] * d.reshape((1,) * axis + (-1,)) if axis else d.astype(np.float64)
    return channels_last(total / jnp.asarray(divisor[..., None], xs.dtype))


def _adaptive_axis(a, axis: int, out: int):
    n = a.shape[axis]
    if out == 1:
        return jnp.mean(a, axis=axis, keepdims=True)
    if n % out == 0:
        shape = a.shape[:axis] + (out, n // out) + a.shape[axis + 1:]
        return jnp.mean(a.reshape(shape), axis=axis + 1)
    slices = []
    for i in range(out):
        lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
        slices.append(jnp.mean(jax.lax.slice_in_dim(a, lo, hi, axis=axis), axis=axis, keepdims=True))
    return jnp.concatenate(slices, axis=axis)


@op("aten.adaptive_avg_pool1d.default", "aten.adaptive_avg_pool2d.default",
    "aten.adaptive_avg_pool3d.default", "aten._adaptive_avg_pool2d.default",
    "aten._adaptive_avg_pool3d.default")
def adaptive_avg_pool(ctx, x, output_size):
    dn = x.rank - 2
    xs = x.last()
    for i, out in enumerate(_tuple(output_size, dn)):
        xs = _adaptive_axis(xs, 1 + i, xs.shape[1 + i] if out is None else out)
    return channels_last(xs)


def _out_sizes(sizes, output_size, scales):
    if output_size is not None:
        return list(output_size), [None] * len(sizes)
    scales = _tuple(scales, len(sizes)) if not isinstance(scales, float) else [scales] * len(sizes)
    return [int(math.floor(n * s)) for n, s in zip(sizes, scales, strict=True)], list(scales)


def _nearest_axis(a, axis: int, out: int, scale, exact: bool):
    n = a.shape[axis]
    if out == n:
        return a
    k = out // n
    if out == k * n and k & (k - 1) == 0 and not exact and (not scale or scale == k):
        return jnp.repeat(a, k, axis=axis)  # a power-of-two factor: floor(dst / k) exactly
    ratio = np.float32(1.0 / scale if scale else n / out)
    dst = np.arange(out, dtype=np.float32)
    src = np.floor((dst + np.float32(0.5)) * ratio) if exact else np.floor(dst * ratio)
    return jnp.take(a, np.minimum(src.astype(np.int64), n - 1), axis=axis)


def _linear_axis(a, axis: int, out: int, scale, align_corners: bool):
    n = a.shape[axis]
    if out == n and (align_corners or not scale or scale == 1):
        return a
    acc = np.dtype(jnp.promote_types(a.dtype, jnp.float32))
    dst = np.arange(out).astype(acc)
    if align_corners:
        src = dst * acc.type((n - 1) / (out - 1) if out > 1 else 0)
    else:
        ratio = acc.type(1.0 / scale if scale else n / out)
        src = np.maximum((dst + acc.type(0.5)) * ratio - acc.type(0.5), 0)
    lo = np.minimum(np.floor(src).astype(np.int64), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).astype(acc)
    shape = [1] * a.ndim
    shape[axis] = out
    w = jnp.asarray(frac.reshape(shape), a.dtype)
    return jnp.take(a, lo, axis=axis) * (1 - w) + jnp.take(a, hi, axis=axis) * w


@op("aten.upsample_nearest1d.vec", "aten.upsample_nearest2d.vec", "aten.upsample_nearest3d.vec",
    "aten._upsample_nearest_exact1d.vec", "aten._upsample_nearest_exact2d.vec",
    "aten._upsample_nearest_exact3d.vec")
def upsample_nearest(ctx, x, output_size, scales=None):
    xs = x.last()
    outs, scales = _out_sizes(xs.shape[1:-1], output_size, scales)
    exact = "exact" in ctx.node.op
    for i, (out, scale) in enumerate(zip(outs, scales, strict=True)):
        xs = _nearest_axis(xs, 1 + i, out, scale, exact)
    return channels_last(xs)


@op("aten.upsample_linear1d.vec", "aten.upsample_bilinear2d.vec", "aten.upsample_trilinear3d.vec")
def upsample_linear(ctx, x, output_size, align_corners, scales=None):
    xs = x.last()
    sizes = xs.shape[1:-1]
    outs, scales = _out_sizes(sizes, output_size, scales)
    if align_corners and len(sizes) == 2 and all(o == 2 * n for o, n in zip(outs, sizes, strict=True)):
        return channels_last(ops.upsample_bilinear2(xs))
    for i, (out, scale) in enumerate(zip(outs, scales, strict=True)):
        xs = _linear_axis(xs, 1 + i, out, scale, align_corners)
    return channels_last(xs)


@op("aten.pixel_shuffle.default")
def pixel_shuffle(ctx, x, r):
    xs = x.last()
    n, h, w, c = xs.shape
    y = xs.reshape(n, h, w, c // (r * r), r, r).transpose(0, 1, 4, 2, 5, 3)
    return channels_last(y.reshape(n, h * r, w * r, c // (r * r)))


@op("aten.pixel_unshuffle.default")
def pixel_unshuffle(ctx, x, r):
    xs = x.last()
    n, h, w, c = xs.shape
    y = xs.reshape(n, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)
    return channels_last(y.reshape(n, h // r, w // r, c * r * r))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@op("aten.pad.default", "aten.constant_pad_nd.default", "aten.reflection_pad1d.default",
    "aten.reflection_pad2d.default", "aten.reflection_pad3d.default",
    "aten.replication_pad1d.default", "aten.replication_pad2d.default",
    "aten.replication_pad3d.default", "aten._pad_circular.default")
def pad(ctx, x, padding, mode_or_value=None, value=None):
    name = ctx.node.op
    if name == "aten.pad.default":
        mode = mode_or_value or "constant"
    else:
        mode = ("reflect" if "reflection" in name else "replicate" if "replication" in name
                else "circular" if "circular" in name else "constant")
        value = mode_or_value
    widths = [(0, 0)] * x.rank
    for i in range(len(padding) // 2):
        widths[x.axis(x.rank - 1 - i)] = (padding[2 * i], padding[2 * i + 1])
    if any(lo < 0 or hi < 0 for lo, hi in widths):  # negative padding crops
        x = like(x, x.a[tuple(slice(-lo if lo < 0 else 0, hi if hi < 0 else None) for lo, hi in widths)])
        widths = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    kw = {"constant_values": value or 0} if mode == "constant" else {}
    return like(x, jnp.pad(x.a, widths, mode=_PAD_MODES[mode], **kw))


# --- joining, views and matmuls ---------------------------------------------------------------

@op("aten.cat.default", "aten.concat.default", "aten.concatenate.default")
def cat(ctx, tensors, dim=0):
    tensors = [t for t in tensors if not (t.rank == 1 and t.shape[0] == 0)]
    arrays, cl = aligned(tensors)
    ref = T(arrays[0], cl)
    return T(jnp.concatenate(arrays, axis=ref.axis(dim)), cl)


@op("aten.stack.default")
def stack(ctx, tensors, dim=0):
    return T(jnp.stack([t.torch() for t in tensors], axis=dim % (tensors[0].rank + 1)))


def _torch(fn):
    return lambda ctx, x, *args, **kw: T(fn(x.torch(), *args, **kw))


def _size(shape):
    return tuple(int(s) for s in shape)


OPS.update({
    "aten.view.default": _torch(lambda a, shape: a.reshape(_size(shape))),
    "aten.reshape.default": _torch(lambda a, shape: a.reshape(_size(shape))),
    "aten._unsafe_view.default": _torch(lambda a, shape: a.reshape(_size(shape))),
    "aten.permute.default": _torch(lambda a, dims: jnp.transpose(a, [d % a.ndim for d in dims])),
    "aten.transpose.int": _torch(lambda a, d0, d1: jnp.swapaxes(a, d0, d1)),
    "aten.t.default": _torch(lambda a: a.T),
    "aten.unsqueeze.default": _torch(lambda a, d: jnp.expand_dims(a, d % (a.ndim + 1))),
    "aten.squeeze.dim": _torch(lambda a, d: jnp.squeeze(a, d) if a.shape[d] == 1 else a),
    "aten.squeeze.dims": _torch(lambda a, ds: jnp.squeeze(a, tuple(d for d in ds if a.shape[d] == 1))),
    "aten.squeeze.default": _torch(jnp.squeeze),
    "aten.expand.default": _torch(lambda a, shape, implicit=False: jnp.broadcast_to(
        a, tuple(a.shape[i - (len(shape) - a.ndim)] if s == -1 else s for i, s in enumerate(shape)))),
    "aten.expand_as.default": lambda ctx, a, other: T(jnp.broadcast_to(a.torch(), other.shape)),
    "aten.repeat.default": _torch(lambda a, reps: jnp.tile(a, reps)),
    "aten.matmul.default": lambda ctx, a, b: T(jnp.matmul(a.torch(), b.torch())),
    "aten.bmm.default": lambda ctx, a, b: T(jnp.matmul(a.torch(), b.torch())),
    "aten.mm.default": lambda ctx, a, b: T(jnp.matmul(a.torch(), b.torch())),
})


@op("aten.flatten.using_ints")
def flatten(ctx, x, start=0, end=-1):
    a = x.torch()
    start, end = start % max(a.ndim, 1), end % max(a.ndim, 1)
    return T(a.reshape(a.shape[:start] + (-1,) + a.shape[end + 1:]))


@op("aten.select.int")
def select(ctx, x, dim, index):
    y = jnp.take(x.a, index, axis=x.axis(dim))
    return reduced(x, y, (dim,))


@op("aten.slice.Tensor")
def slice_(ctx, x, dim=0, start=None, end=None, step=1):
    axis = x.axis(dim)
    n = x.a.shape[axis]
    index = [slice(None)] * x.rank
    index[axis] = slice(start if start is None else min(start, n), end if end is None else min(end, n), step)
    return like(x, x.a[tuple(index)])


@op("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default",
    "aten.unsafe_split.Tensor")
def split(ctx, x, size, dim=0):
    axis, n = x.axis(dim), x.shape[dim]
    if ctx.node.op == "aten.chunk.default":
        size = -(-n // size)
    sizes = [size] * (n // size) + ([n % size] if n % size else []) if isinstance(size, int) else size
    bounds = np.cumsum(sizes)[:-1]
    return [like(x, a) for a in jnp.split(x.a, bounds, axis=axis)]


@op("aten.unbind.int")
def unbind(ctx, x, dim=0):
    return [reduced(x, jnp.take(x.a, i, axis=x.axis(dim)), (dim,)) for i in range(x.shape[dim])]


@op("aten.scaled_dot_product_attention.default")
def attention(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    qa, ka, va = q.torch(), k.torch(), v.torch()
    scale = 1 / math.sqrt(qa.shape[-1]) if scale is None else scale
    s = jnp.matmul(qa, jnp.swapaxes(ka, -1, -2)) * scale
    if is_causal:
        s = jnp.where(jnp.tril(jnp.ones(s.shape[-2:], bool)), s, -jnp.inf)
    if attn_mask is not None:
        m = attn_mask.torch()
        s = jnp.where(m, s, -jnp.inf) if m.dtype == jnp.bool_ else s + m
    return T(jnp.matmul(jax.nn.softmax(s, axis=-1), va))


# --- dtypes and creation ----------------------------------------------------------------------

def dtype_of(encoded):
    name = encoded["dtype"] if isinstance(encoded, dict) else encoded
    if name == "int64" and not jax.config.jax_enable_x64:
        name = "int32"
    return jnp.dtype(name)


@op("aten.to.dtype", "aten._to_copy.default", "aten.to.dtype_layout", "aten.type_as.default",
    "aten.to.device")
def to(ctx, x, *args, dtype=None, **_):
    if ctx.node.op == "aten.type_as.default":
        return like(x, x.a.astype(args[0].dtype))
    if ctx.node.op == "aten.to.device":
        dtype = args[1] if len(args) > 1 else dtype
    elif args and dtype is None:
        dtype = args[0]
    return x if dtype is None else like(x, x.a.astype(dtype_of(dtype)))


def _created(fill):
    def create(ctx, size, *args, dtype=None, **_):
        return T(fill(tuple(int(s) for s in size), dtype_of(dtype) if dtype else jnp.float32, *args))
    return create


OPS.update({
    "aten.zeros.default": _created(jnp.zeros),
    "aten.ones.default": _created(jnp.ones),
    "aten.empty.memory_format": _created(jnp.zeros),
    "aten.full.default": _created(lambda shape, dtype, value: jnp.full(shape, value, dtype)),
})


@op("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def arange(ctx, *args, dtype=None, **_):
    dtype = dtype_of(dtype) if dtype else (jnp.float32 if any(isinstance(a, float) for a in args)
                                           else dtype_of("int64"))
    return T(jnp.arange(*args, dtype=dtype))


@op("aten.sym_size.int")
def sym_size(ctx, x, dim):
    return x.shape[dim]


@op("aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default",
    "aten._assert_tensor_metadata.default", "aten.sym_constrain_range.default")
def no_op(ctx, *args, **kwargs):
    return None


SHAPE_OPS = {f"_operator.{name}": getattr(operator, name)
             for name in ("add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq",
                          "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_", "getitem")}
SHAPE_OPS.update({"math.ceil": math.ceil, "math.floor": math.floor, "math.sqrt": math.sqrt,
                  "torch.sym_max": max, "torch.sym_min": min, "torch.sym_float": float,
                  "torch.sym_int": int, "torch.sym_not": operator.not_,
                  "torch.sym_sum": sum, "builtins.max": max, "builtins.min": min})


def supported(name: str) -> bool:
    return name in OPS or name in SHAPE_OPS
