"""bubbliiiing/unet-pytorch `Unet(num_classes, backbone='vgg'|'resnet50')` (nets/unet.py).

A VGG16 or ResNet-50 encoder with a decoder of `unetUp` blocks: align-corners bilinear x2
(`UpsamplingBilinear2d`), concat [skip, upsampled], two padded convs with ReLU. Two
variants load the same keys and are options here: the seed's copy upsamples with
`UpsamplingNearest2d` (`nearest_upsampling=True`), and checkpoints from before upstream
commit 34c97c5 (2021-08) have no ReLUs in `unetUp` (`up_relu=False`).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.models.backbones import resnet, vgg
from unet_jax.models.blocks import DoubleConv, double_conv_rules
from unet_jax.models.keymap import conv
from unet_jax.nn import (
    Conv2d,
    check_input,
    require_same_size,
    upsample_bilinear2,
    upsample_nearest2,
)

IN_FILTERS = {"vgg": (192, 384, 768, 1024), "resnet50": (192, 512, 1024, 3072)}
OUT_FILTERS = (64, 128, 256, 512)
MULTIPLE = {"vgg": 16, "resnet50": 32}


@dataclasses.dataclass(frozen=True)
class VGG16UnetConfig:
    num_classes: int  # output channels of `final`
    in_channels: int  # input image channels (3 upstream)
    nearest_upsampling: bool  # the seed's UpsamplingNearest2d; upstream is bilinear
    up_relu: bool  # ReLU after the unetUp convs (absent before upstream 34c97c5, 2021-08)


@dataclasses.dataclass(frozen=True)
class ResNet50UnetConfig(VGG16UnetConfig):
    pass


class UnetUp(nnx.Module):
    """`unetUp(in, out)`: cat [skip, up(deeper)], conv1 + ReLU, conv2 + ReLU."""

    def __init__(self, in_size: int, out_size: int, *, upsample, relu: bool, valid_sizes: str,
                 rngs: nnx.Rngs):
        self.conv = DoubleConv(in_size, out_size, batchnorm=False, relu=relu, rngs=rngs)
        self.upsample = upsample
        self.valid_sizes = valid_sizes

    def __call__(self, skip: jax.Array, deeper: jax.Array) -> jax.Array:
        up = self.upsample(deeper)
        require_same_size(skip, up, self.valid_sizes)
        return self.conv(jnp.concatenate([skip, up], axis=-1))


class Unet(nnx.Module):
    """`Unet(num_classes, backbone)`; output the input size."""

    def __init__(self, num_classes: int = 21, in_channels: int = 3,
                 nearest_upsampling: bool = False, up_relu: bool = True, *,
                 backbone: str = "vgg", rngs: nnx.Rngs):
        if backbone not in IN_FILTERS:
            raise ValueError(f"Unsupported backbone - `{backbone}`, Use vgg, resnet50.")
        config_cls = VGG16UnetConfig if backbone == "vgg" else ResNet50UnetConfig
        self.config = config_cls(num_classes, in_channels, nearest_upsampling, up_relu)
        self.backbone = backbone
        self.valid_sizes = (f"{self.arch} takes H and W that are multiples of "
                            f"{MULTIPLE[backbone]}; the output has the input size.")
        upsample = upsample_nearest2 if nearest_upsampling else upsample_bilinear2
        if backbone == "vgg":
            self.vgg = vgg.VGG16(in_channels, rngs=rngs)
        else:
            self.resnet = resnet.ResNet50(in_channels, rngs=rngs)
        for k, (cin, cout) in enumerate(zip(IN_FILTERS[backbone], OUT_FILTERS), start=1):
            setattr(self, f"up_concat{k}", UnetUp(cin, cout, upsample=upsample, relu=up_relu,
                                                  valid_sizes=self.valid_sizes, rngs=rngs))
        self.up_conv = DoubleConv(64, 64, batchnorm=False, rngs=rngs) if backbone == "resnet50" else None
        self.upsample = upsample
        self.final = Conv2d(OUT_FILTERS[0], num_classes, 1, rngs=rngs)

    @property
    def arch(self) -> str:
        return "vgg16_unet" if self.backbone == "vgg" else "resnet50_unet"

    @property
    def encoder(self) -> nnx.Module:
        """The backbone (`vgg` or `resnet`): what `freeze_backbone` freezes upstream."""
        return self.vgg if self.backbone == "vgg" else self.resnet

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(x, self.config.in_channels, MULTIPLE[self.backbone], self.arch)
        feat1, feat2, feat3, feat4, feat5 = self.encoder(x)
        up4 = self.up_concat4(feat4, feat5)
        up3 = self.up_concat3(feat3, up4)
        up2 = self.up_concat2(feat2, up3)
        up1 = self.up_concat1(feat1, up2)
        if self.up_conv is not None:
            up1 = self.up_conv(self.upsample(up1))
        return self.final(up1)


def _key_map(config: VGG16UnetConfig):
    u = "up_concat{k}"
    rules = double_conv_rules(f"{u}.conv", (f"{u}.conv1", f"{u}.conv2"))
    if isinstance(config, ResNet50UnetConfig):
        rules += resnet.key_map("resnet.", "resnet.")
        rules += double_conv_rules("up_conv", ("up_conv.1", "up_conv.3"))
    else:
        rules += vgg.key_map("vgg.", "vgg.")
    return rules + conv("final")


def _infer(shapes: registry.KeyShapes, *, first_key: str, config_cls: type):
    if first_key not in shapes or "final.weight" not in shapes:
        return None
    # The two variant flags cannot be read off the weights: upstream's current code is assumed.
    return config_cls(num_classes=shapes["final.weight"][0], in_channels=shapes[first_key][1],
                      nearest_upsampling=False, up_relu=True)


BACKBONES = {  # torchvision ImageNet files fill them (what upstream's `freeze_backbone` freezes)
    "vgg": registry.Backbone("vgg", lambda c: "vgg16",
                             lambda c, rngs: vgg.VGG16(c.in_channels, rngs=rngs),
                             lambda c: vgg.key_map("", "")),
    "resnet50": registry.Backbone("resnet", lambda c: "resnet50",
                                  lambda c, rngs: resnet.ResNet50(c.in_channels, rngs=rngs),
                                  lambda c: resnet.key_map("", "")),
}

for _name, _backbone, _config, _first, _train in (
        ("vgg16_unet", "vgg", VGG16UnetConfig, "vgg.features.0.weight",
         registry.NO_BATCHNORM_TRAINING),  # VGG16 cfg D and a plain decoder: no BatchNorm
        ("resnet50_unet", "resnet50", ResNet50UnetConfig, "resnet.conv1.weight", {})):
    registry.register(registry.Arch(
        name=_name, model=functools.partial(Unet, backbone=_backbone), config=_config,
        key_map=_key_map, infer=functools.partial(_infer, first_key=_first, config_cls=_config),
        uniform={"num_classes": "num_classes", "in_channels": "in_channels"},
        source=f"bubbliiiing/unet-pytorch nets/unet.py `Unet(backbone='{_backbone}')`",
        train_defaults=_train, sizes=registry.SizeRule(MULTIPLE[_backbone], MULTIPLE[_backbone]),
        preprocess="bubbliiiing", backbone=BACKBONES[_backbone]))
