"""CPU convolution algorithms: kernel gradients as one GEMM per tap, broadcast products for
few-channel stems, Winograd for 3x3 convs; `choose` picks one per layer shape: measured on
this machine where `tuning` holds the shape, else by `POLICY`.

XLA:CPU's own kernel-gradient convolution is several times slower than these GEMMs, and its
small-channel convolutions slower than fused products (docs/cpu-kernels.md)."""

import functools

import jax
import jax.numpy as jnp

from unet_jax.kernels.cpu import tuning, winograd
from unet_jax.kernels.cpu.policy import POLICY


def accumulation_dtype(dtype):
    """Accumulate GEMMs in float32 at least (bfloat16 inputs), float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def tap_gemms(sliding: jax.Array, fixed: jax.Array, kernel: int, stride: int, padding: int,
              sliding_first: bool) -> jax.Array:
    """A kernel gradient as one GEMM per tap: tap (i, j) contracts `fixed` (B, H, W, C) over
    B*H*W with the window of `sliding`, padded, that starts at (i, j) and steps by `stride`.
    Returns (kernel, kernel, C_first, C_second), `sliding` first when `sliding_first`."""
    b, h, w, _ = fixed.shape
    c = sliding.shape[-1]
    padded = jnp.pad(sliding, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    fixed2 = fixed.reshape(-1, fixed.shape[-1])
    acc = accumulation_dtype(fixed.dtype)

    def tap(i, j):
        window = jax.lax.slice(padded, (0, i, j, 0), (b, i + stride * (h - 1) + 1,
                                                      j + stride * (w - 1) + 1, c),
                               (1, stride, stride, 1)).reshape(-1, c)
        first, second = (window, fixed2) if sliding_first else (fixed2, window)
        return jnp.matmul(first.T, second, preferred_element_type=acc)

    return jnp.stack([jnp.stack([tap(i, j) for j in range(kernel)]) for i in range(kernel)])


def with_tapwise_kernel_grad(op, sliding_first: bool, primal=None):
    """`op(x, k, stride, padding)` whose kernel gradient is `tap_gemms`. For a conv,
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
        dk = tap_gemms(sliding, fixed, k.shape[0], stride, padding, sliding_first)
        return dx, dk.astype(k.dtype)

    fn.defvjp(fwd, bwd)
    return fn


def xla_conv(x, k, stride: int, padding: int):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), ((padding, padding),) * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


conv_tapwise = with_tapwise_kernel_grad(xla_conv, sliding_first=True)


def conv_by_products(x, k, padding: int):
    """A stride-1 convolution as kh*kw*C_in broadcast multiply-adds in one fused loop."""
    kh, kw, in_ch, _ = k.shape
    b, h, w, _ = x.shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    acc = accumulation_dtype(x.dtype)
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))).astype(acc)
    y = None
    for i in range(kh):
        for j in range(kw):
            for c in range(in_ch):
                term = xp[:, i:i + ho, j:j + wo, c:c + 1] * k[i, j, c].astype(acc)
                y = term if y is None else y + term
    return y.astype(x.dtype)


def inference_by(primal, differentiable):
    """`primal(x, k)` when not differentiated; under differentiation `differentiable(x, k)`
    and its gradients (both compute the same conv, to float rounding)."""

    @jax.custom_vjp
    def fn(x, k):
        return primal(x, k)

    def fwd(x, k):
        return jax.vjp(differentiable, x, k)  # the vjp function is a pytree of residuals

    fn.defvjp(fwd, lambda vjp, dy: vjp(dy))
    return fn


def candidates(plain, x: jax.Array, k: jax.Array, stride: int, padding: int) -> dict:
    """{name: conv(x, k)}: every algorithm that computes this conv (to float rounding)."""
    found = {"xla": plain, "tapwise": lambda x, k: conv_tapwise(x, k, stride, padding)}
    if x.dtype in (jnp.float32, jnp.float64):
        if k.shape[:2] == (3, 3) and stride == 1:
            found["winograd"] = lambda x, k: winograd.conv3x3(x, k, padding, True)
            found["winograd_xla_dx"] = lambda x, k: winograd.conv3x3(x, k, padding, False)
        if stride == 1 and k.shape[2] <= 2 * POLICY.stem_channels:  # measured a little wider
            found["products"] = lambda x, k: conv_by_products(x, k, padding)
    return found


def choose(plain, x: jax.Array, k: jax.Array, *, stride: int, padding: int):
    """The CPU algorithm for `plain(x, k)`, a conv with these `stride` and `padding`: the
    measured fastest (for the forward alone, and under differentiation) where `tuning`
    holds this shape or measures it now, else the policy's; None for XLA's own."""
    tuning.note(x, k, stride, padding)
    key = tuning.shape_key(x, k, stride, padding)
    entry = tuning.tuned().get(key)
    found = candidates(plain, x, k, stride, padding)
    if entry is None and tuning.measuring_on_first_use():
        entry = tuning.measure(found, x, k)
        tuning.record({key: entry})
    names = (entry["infer"], entry["train"]) if entry else (None, None)
    if not set(names) <= found.keys():  # untuned, or tuned by another version's candidates
        names = by_policy(x, k, stride=stride, padding=padding)
    infer, train = names
    if infer == train:
        return None if infer == "xla" else found[infer]
    return inference_by(found[infer], found[train])


def by_policy(x: jax.Array, k: jax.Array, *, stride: int, padding: int) -> tuple[str, str]:
    """The `candidates` the policy picks (thresholds measured on one processor): (forward
    alone, under differentiation)."""
    if x.dtype not in (jnp.float32, jnp.float64):
        return "tapwise", "tapwise"
    kh, kw, in_ch, out_ch = k.shape
    if in_ch <= POLICY.stem_channels and stride == 1:
        # Under differentiation the products would be fused into, and recomputed by, each
        # of the ~8 consumers in BatchNorm's forward and backward.
        return "products", "xla" if out_ch <= POLICY.native_output_channels else "tapwise"
    b, h, w, _ = x.shape
    macs = b * (h + 2 * padding - 2) * (w + 2 * padding - 2) * 9 * in_ch * out_ch
    if ((kh, kw, stride) == (3, 3, 1) and in_ch >= POLICY.winograd_channels
            and macs >= POLICY.winograd_min_macs
            and max(in_ch, out_ch) > POLICY.native_output_channels):
        wino = "winograd" if in_ch >= POLICY.winograd_input_grad_channels else "winograd_xla_dx"
        return (wino if macs >= POLICY.winograd_inference_min_macs else "xla"), wino
    return ("xla",) * 2 if out_ch <= POLICY.native_output_channels else ("tapwise",) * 2
