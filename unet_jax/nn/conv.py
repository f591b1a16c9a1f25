"""torch.nn.Conv2d and ConvTranspose2d, NHWC, with torch's default init."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import ops


def torch_uniform(bound: float):
    """U(-bound, bound): torch's default init for conv weights and biases."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


@jax.custom_vjp
def _add_wider_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    return y + b.astype(y.dtype)


def _add_wider_bias_bwd(b, dy):
    # autodiff would sum dy over B*H*W in y's dtype (bfloat16); sum in the bias's instead
    return dy, jnp.sum(dy, axis=tuple(range(dy.ndim - 1)), dtype=b.dtype)


_add_wider_bias.defvjp(lambda y, b: (_add_wider_bias(y, b), b), _add_wider_bias_bwd)


def add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    """`y + b` over the channel axis; a float32 bias on bfloat16 activations gets its
    gradient accumulated in float32."""
    return y + b if y.dtype == b.dtype else _add_wider_bias(y, b)


class Conv2d(nnx.Module):
    """torch.nn.Conv2d(in_ch, out_ch, kernel, stride, padding) with torch's default init;
    `kernel` is torch's weight `(out, in, kh, kw)` stored as `(kh, kw, in, out)`.

    Padding is explicit and symmetric: Flax 'SAME' pads (0, 1) on even inputs at stride 2.
    Parameters stay in their dtype and are cast to the input's (mixed precision).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding: int = 0,
                 bias: bool = True, rngs: nnx.Rngs):
        init = torch_uniform(1.0 / math.sqrt(in_ch * kernel * kernel))
        self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, in_ch, out_ch)))
        self.bias = nnx.Param(init(rngs.params(), (out_ch,))) if bias else None
        self.stride, self.padding = stride, padding

    def __call__(self, x: jax.Array) -> jax.Array:
        y = ops.conv2d(x, self.kernel[...].astype(x.dtype), self.stride, self.padding)
        return y if self.bias is None else add_bias(y, self.bias[...])


class ConvTranspose2d(nnx.Module):
    """torch.nn.ConvTranspose2d(in_ch, out_ch, kernel, stride, padding), NHWC.

    `kernel` is torch's weight `(in, out, kh, kw)` stored as `(kh, kw, in, out)`.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int, padding: int = 0,
                 rngs: nnx.Rngs):
        # torch computes fan_in from weight.size(1) = out_ch for transposed convs.
        init = torch_uniform(1.0 / math.sqrt(out_ch * kernel * kernel))
        self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, in_ch, out_ch)))
        self.bias = nnx.Param(init(rngs.params(), (out_ch,)))
        self.stride, self.padding = stride, padding

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel[...].astype(x.dtype)
        return add_bias(ops.conv_transpose2d(x, k, self.stride, self.padding), self.bias[...])

