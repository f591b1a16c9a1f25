"""Conv blocks shared by several archs, with the key-map helper that goes with them."""

import jax
from flax import nnx

from unet_jax.models.keymap import Rule, bn, conv
from unet_jax.nn import BatchNorm, Conv2d


class ConvBNReLU(nnx.Module):
    """torch `Sequential(Conv2d(kernel_size, padding), [BatchNorm2d], [ReLU])`."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel_size: int = 3, padding: int = 1,
                 batchnorm: bool = True, relu: bool = True, bias: bool = True, rngs: nnx.Rngs):
        self.conv = Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=bias, rngs=rngs)
        self.bn = BatchNorm(out_ch) if batchnorm else None
        self.relu = relu

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return nnx.relu(x) if self.relu else x


class DoubleConv(nnx.Module):
    """Two `ConvBNReLU`s, in -> mid (default out) -> out: the U-Net stage of every arch here."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None, *, padding: int = 1,
                 batchnorm: bool = True, relu: bool = True, bias: bool = True, rngs: nnx.Rngs):
        opts = dict(padding=padding, batchnorm=batchnorm, relu=relu, bias=bias, rngs=rngs)
        self.conv1 = ConvBNReLU(in_ch, mid_ch or out_ch, **opts)
        self.conv2 = ConvBNReLU(mid_ch or out_ch, out_ch, **opts)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv2(self.conv1(x))


def double_conv_rules(flax: str, convs: tuple[str, str], bns: tuple[str, str] | None = None,
                      *, bias: bool = True) -> list[Rule]:
    """Rules for a `DoubleConv` at Flax path `flax` whose two torch convs sit at the full
    torch paths `convs` (and BatchNorms at `bns`), e.g. `("Conv1.conv.0", "Conv1.conv.3")`;
    `bias=False` for convs built with `bias=False`."""
    rules = []
    for j, torch_conv in enumerate(convs, start=1):
        rules += conv(torch_conv, f"{flax}.conv{j}.conv", bias=bias)
        if bns is not None:
            rules += bn(bns[j - 1], f"{flax}.conv{j}.bn")
    return rules
