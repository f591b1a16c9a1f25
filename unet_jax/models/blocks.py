"""Conv blocks shared by several archs, with the key-map helper that goes with them."""

import jax
from flax import nnx

from unet_jax.convert.keymap import Rule, bn, conv
from unet_jax.nn import BatchNorm, Conv2d


class ConvBNReLU(nnx.Module):
    """torch `Sequential(Conv2d(k, padding), [BatchNorm2d], [ReLU])`."""

    def __init__(self, in_ch: int, out_ch: int, *, padding: int = 1, batchnorm: bool = True,
                 relu: bool = True, rngs: nnx.Rngs):
        self.conv = Conv2d(in_ch, out_ch, 3, padding=padding, rngs=rngs)
        self.bn = BatchNorm(out_ch) if batchnorm else None
        self.relu = relu

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return nnx.relu(x) if self.relu else x


class DoubleConv(nnx.Module):
    """Two `ConvBNReLU`s, in -> out -> out: the U-Net stage of every arch here."""

    def __init__(self, in_ch: int, out_ch: int, *, padding: int = 1, batchnorm: bool = True,
                 relu: bool = True, rngs: nnx.Rngs):
        opts = dict(padding=padding, batchnorm=batchnorm, relu=relu, rngs=rngs)
        self.conv1 = ConvBNReLU(in_ch, out_ch, **opts)
        self.conv2 = ConvBNReLU(out_ch, out_ch, **opts)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv2(self.conv1(x))


def double_conv_rules(flax: str, convs: tuple[str, str], bns: tuple[str, str] | None = None
                      ) -> list[Rule]:
    """Rules for a `DoubleConv` at Flax path `flax` whose two torch convs sit at the full
    torch paths `convs` (and BatchNorms at `bns`), e.g. `("Conv1.conv.0", "Conv1.conv.3")`."""
    rules = []
    for j, torch_conv in enumerate(convs, start=1):
        rules += conv(torch_conv, f"{flax}.conv{j}.conv")
        if bns is not None:
            rules += bn(bns[j - 1], f"{flax}.conv{j}.bn")
    return rules
