"""pytorch-semseg `unet` (meetshah1995/pytorch-semseg, ptsemseg/models/unet.py + utils.py).

The original U-Net: unpadded (valid) 3x3 convs, BatchNorm in the encoder only, transposed
conv upsampling, skips cropped symmetrically by an offset computed from H alone.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.models.blocks import DoubleConv, double_conv_rules
from unet_jax.models.keymap import conv, conv_t
from unet_jax.nn import Conv2d, ConvTranspose2d, check_input, crop_like_semseg, max_pool2

VALID_SIZES = ("semseg_unet takes H and W of the form 188 + 16k (188, 204, ..., 572, ...); "
               "the output is 184 smaller (572 -> 388).")
ENCODER = ("conv1", "conv2", "conv3", "conv4", "center")


@dataclasses.dataclass(frozen=True)
class SemsegUNetConfig:
    feature_scale: int  # widths are int([64, 128, 256, 512, 1024] / feature_scale)
    n_classes: int  # output channels of `final`
    is_deconv: bool  # ConvTranspose2d upsampling (False, bilinear, is broken upstream)
    in_channels: int  # input image channels
    is_batchnorm: bool  # BatchNorm in the encoder; the decoder never has one


class UnetUp(nnx.Module):
    """ptsemseg `unetUp`: `up` (ConvTranspose2d k2 s2), crop the skip, cat [skip, up], `conv`."""

    def __init__(self, in_size: int, out_size: int, *, rngs: nnx.Rngs):
        self.conv = DoubleConv(in_size, out_size, padding=0, batchnorm=False, rngs=rngs)
        self.up = ConvTranspose2d(in_size, out_size, 2, stride=2, rngs=rngs)

    def __call__(self, skip: jax.Array, deeper: jax.Array) -> jax.Array:
        up = self.up(deeper)
        skip = crop_like_semseg(skip, up, VALID_SIZES)
        return self.conv(jnp.concatenate([skip, up], axis=-1))


class SemsegUNet(nnx.Module):
    """ptsemseg `unet(feature_scale, n_classes, is_deconv, in_channels, is_batchnorm)`."""

    def __init__(self, feature_scale: int = 4, n_classes: int = 21, is_deconv: bool = True,
                 in_channels: int = 3, is_batchnorm: bool = True, *, rngs: nnx.Rngs):
        if not is_deconv:
            raise ValueError(
                "semseg_unet with is_deconv=False is broken upstream (pytorch-semseg issues "
                "#165, #180): UpsamplingBilinear2d keeps in_size channels, so unetUp's conv "
                "receives in_size + out_size channels and torch fails. Use is_deconv=True.")
        self.config = SemsegUNetConfig(feature_scale, n_classes, is_deconv, in_channels,
                                       is_batchnorm)
        f = [int(x / feature_scale) for x in (64, 128, 256, 512, 1024)]
        widths = zip((in_channels, *f[:-1]), f)
        for name, (cin, cout) in zip(ENCODER, widths):
            setattr(self, name, DoubleConv(cin, cout, padding=0, batchnorm=is_batchnorm,
                                           rngs=rngs))
        for k in (4, 3, 2, 1):
            setattr(self, f"up_concat{k}", UnetUp(f[k], f[k - 1], rngs=rngs))
        self.final = Conv2d(f[0], n_classes, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(x, self.config.in_channels, 188, "semseg_unet")
        conv1 = self.conv1(x)
        conv2 = self.conv2(max_pool2(conv1))
        conv3 = self.conv3(max_pool2(conv2))
        conv4 = self.conv4(max_pool2(conv3))
        center = self.center(max_pool2(conv4))
        up4 = self.up_concat4(conv4, center)
        up3 = self.up_concat3(conv3, up4)
        up2 = self.up_concat2(conv2, up3)
        up1 = self.up_concat1(conv1, up2)
        return self.final(up1)


def key_map(config: SemsegUNetConfig):
    bns = (lambda m: (f"{m}.conv1.1", f"{m}.conv2.1")) if config.is_batchnorm else (lambda m: None)
    rules = []
    for m in ENCODER:
        rules += double_conv_rules(m, (f"{m}.conv1.0", f"{m}.conv2.0"), bns(m))
    u = "up_concat{k}"
    rules += double_conv_rules(f"{u}.conv", (f"{u}.conv.conv1.0", f"{u}.conv.conv2.0"))
    return rules + conv_t(f"{u}.up") + conv("final")


def infer(shapes: registry.KeyShapes) -> SemsegUNetConfig | None:
    if "center.conv1.0.weight" not in shapes or "up_concat1.conv.conv1.0.weight" not in shapes:
        return None
    f0, in_channels = shapes["conv1.conv1.0.weight"][:2]
    center = shapes["center.conv1.0.weight"][0]
    scales = [s for s in range(1, 65) if int(64 / s) == f0 and int(1024 / s) == center]
    return SemsegUNetConfig(
        feature_scale=scales[0] if scales else 64 // max(f0, 1), n_classes=shapes["final.weight"][0],
        is_deconv="up_concat1.up.weight" in shapes, in_channels=in_channels,
        is_batchnorm="conv1.conv1.1.weight" in shapes)


registry.register(registry.Arch(
    name="semseg_unet", model=SemsegUNet, config=SemsegUNetConfig, key_map=key_map, infer=infer,
    uniform={"num_classes": "n_classes", "in_channels": "in_channels"},
    source="meetshah1995/pytorch-semseg ptsemseg/models/unet.py `unet`",
    train_defaults={"image_size": 252},  # 252 leaves a 68x68 output
    sizes=registry.SizeRule(16, 188, shrink=184), preprocess="semseg"))
