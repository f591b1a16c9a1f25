"""milesial/Pytorch-UNet `UNet(n_channels, n_classes, bilinear)` (unet/unet_model.py,
unet_parts.py @21d7850).

`DoubleConv` = (conv3x3 -> BN -> ReLU) x 2 (an optional narrower middle); `Down` = max-pool
then DoubleConv; `Up` = ConvTranspose2d(in, in/2, 2, 2) (or align-corners bilinear x2 with
halved widths when `bilinear`), `F.pad` to the skip's size (odd sides: the extra pixel
bottom / right), concat [skip, upsampled], DoubleConv; `OutConv` 1x1. Any size >= 16.
Two checkpoint layouts, told apart by `inc.double_conv.0.bias`: since v3.0 (commit 514f18e)
DoubleConv's convs have `bias=False` (`conv_bias=False`, the default, as the official
Carvana checkpoints); v1.0 / v2.0 checkpoints carry those 18 biases (`conv_bias=True`).
Its training script stores `mask_values` (the mask pixel value of each class) beside the
tensors; `unet_jax.load_torch` keeps it (`unet_jax.models.recorded.mask_values`). `base_width` (upstream 64)
is our extension.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.models.blocks import DoubleConv, double_conv_rules
from unet_jax.models.keymap import conv, conv_t
from unet_jax.nn import Conv2d, ConvTranspose2d, check_input, max_pool2, pad_to, upsample_bilinear2


@dataclasses.dataclass(frozen=True)
class MilesialUNetConfig:
    n_channels: int  # input image channels
    n_classes: int  # output channels of `outc`
    bilinear: bool  # bilinear upsampling (halved widths) instead of ConvTranspose2d
    base_width: int  # width of `inc`; upstream 64
    conv_bias: bool  # DoubleConv convs with biases: v1.0 / v2.0 checkpoints (False since v3.0)
    # What a stored config (saved model, workdir) lacking a field means: those written before
    # `conv_bias` existed were built with the biases.
    MISSING_MEANS: ClassVar[dict] = {"conv_bias": True}


class Up(nnx.Module):
    """`Up(in, out, bilinear)`: upsample, pad to the skip, cat [skip, up], DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int, bilinear: bool, *, conv_bias: bool,
                 rngs: nnx.Rngs):
        self.up = None if bilinear else ConvTranspose2d(in_ch, in_ch // 2, 2, stride=2, rngs=rngs)
        self.conv = DoubleConv(in_ch, out_ch, in_ch // 2 if bilinear else None, bias=conv_bias,
                               rngs=rngs)

    def __call__(self, x1: jax.Array, x2: jax.Array) -> jax.Array:
        x1 = upsample_bilinear2(x1) if self.up is None else self.up(x1)
        x1 = pad_to(x1, x2.shape[1], x2.shape[2])
        return self.conv(jnp.concatenate([x2, x1], axis=-1))


class MilesialUNet(nnx.Module):
    """`UNet(n_channels, n_classes, bilinear=False)`; output the input size."""

    def __init__(self, n_channels: int = 3, n_classes: int = 2, bilinear: bool = False,
                 base_width: int = 64, conv_bias: bool = False, *, rngs: nnx.Rngs):
        self.config = MilesialUNetConfig(n_channels=n_channels, n_classes=n_classes,
                                         bilinear=bilinear, base_width=base_width,
                                         conv_bias=conv_bias)
        w = [base_width * 2**i for i in range(5)]
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(n_channels, w[0], bias=conv_bias, rngs=rngs)
        outs = (w[1], w[2], w[3], w[4] // factor)
        self.down = nnx.List([DoubleConv(cin, cout, bias=conv_bias, rngs=rngs)
                              for cin, cout in zip(w[:4], outs)])
        ups = (w[3] // factor, w[2] // factor, w[1] // factor, w[0])
        self.up = nnx.List([Up(cin, cout, bilinear, conv_bias=conv_bias, rngs=rngs)
                            for cin, cout in zip(w[4:0:-1], ups)])
        self.outc = Conv2d(w[0], n_classes, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(x, self.config.n_channels, 16, "milesial_unet")
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(max_pool2(skips[-1])))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.outc(x)


def key_map(config: MilesialUNetConfig):
    def double(torch: str, flax: str):
        return double_conv_rules(flax, (f"{torch}.double_conv.0", f"{torch}.double_conv.3"),
                                 (f"{torch}.double_conv.1", f"{torch}.double_conv.4"),
                                 bias=config.conv_bias)

    # torch numbers down1..down4 / up1..up4; the Flax lists count from 0
    rules = double("inc", "inc")
    for k in range(1, 5):
        rules += double(f"down{k}.maxpool_conv.1", f"down.{k - 1}")
        rules += double(f"up{k}.conv", f"up.{k - 1}.conv")
        if not config.bilinear:
            rules += conv_t(f"up{k}.up", f"up.{k - 1}.up")
    return rules + conv("outc.conv", "outc")


def infer(shapes: registry.KeyShapes) -> MilesialUNetConfig | None:
    first = "inc.double_conv.0.weight"
    if first not in shapes or "outc.conv.weight" not in shapes:
        return None
    width, n_channels = shapes[first][:2]
    # one key decides the layout; any other conv out of line is then a strict load error
    return MilesialUNetConfig(n_channels=n_channels, n_classes=shapes["outc.conv.weight"][0],
                              bilinear="up1.up.weight" not in shapes, base_width=width,
                              conv_bias="inc.double_conv.0.bias" in shapes)


registry.register(registry.Arch(
    name="milesial_unet", model=MilesialUNet, config=MilesialUNetConfig, key_map=key_map,
    infer=infer, uniform={"num_classes": "n_classes", "in_channels": "n_channels"},
    source="milesial/Pytorch-UNet unet/unet_model.py `UNet`",
    sizes=registry.SizeRule(step=1, minimum=16), preprocess="unit"))
