"""torch's max-pooling layers, NHWC."""

import jax
import jax.numpy as jnp

from unet_jax import ops


def max_pool2(x: jax.Array) -> jax.Array:
    """nn.MaxPool2d(2): floors odd sizes."""
    return ops.max_pool(x, 2, 2, (0, 0))


def max_pool3_s2_ceil(x: jax.Array) -> jax.Array:
    """nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)."""

    def right_pad(n: int) -> int:
        out = -(-(n - 3) // 2) + 1
        if (out - 1) * 2 >= n:  # torch drops a window that would start in the padding
            out -= 1
        return max(0, (out - 1) * 2 + 3 - n)

    return ops.max_pool(x, 3, 2, (right_pad(x.shape[1]), right_pad(x.shape[2])))


def max_pool3_s2_pad1(x: jax.Array) -> jax.Array:
    """nn.MaxPool2d(3, 2, padding=1) (torchvision ResNet's stem): -inf on every side."""
    def right_pad(n: int) -> int:
        out = (n + 2 - 3) // 2 + 1
        return (out - 1) * 2 + 3 - (n + 1)

    x = jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)), constant_values=-jnp.inf)
    return ops.max_pool(x, 3, 2, (right_pad(x.shape[1] - 1), right_pad(x.shape[2] - 1)))
