"""labml.ai annotated U-Net (labmlai/annotated_deep_learning_paper_implementations,
labml_nn/unet/__init__.py, `UNet`).

Padded convs without BatchNorm, transposed-conv upsampling, torchvision center-crop of the
skip (round-half-to-even offsets), concat [upsampled, skip]. `base_width` (default 64, the
upstream widths) is our extension for small models.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.models.blocks import DoubleConv, double_conv_rules
from unet_jax.models.keymap import conv, conv_t
from unet_jax.nn import Conv2d, ConvTranspose2d, center_crop, check_input, max_pool2

# The seed's copy of the code names the bottleneck `middel_conv`; checkpoints carry it.
SEED_BOTTLENECK = "middel_conv"


@dataclasses.dataclass(frozen=True)
class LabmlUNetConfig:
    in_channels: int  # input image channels
    out_channels: int  # output channels of `final_conv`
    base_width: int  # width of the first stage; upstream 64 (64, 128, ..., 1024)
    seed_spelling: bool  # checkpoint names the bottleneck `middel_conv` (the seed's typo)


class LabmlUNet(nnx.Module):
    """labml `UNet(in_channels, out_channels)`; the output is 16 * floor(H / 16) in size."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base_width: int = 64,
                 seed_spelling: bool = False, *, rngs: nnx.Rngs):
        self.config = LabmlUNetConfig(in_channels, out_channels, base_width, seed_spelling)
        w = [base_width * 2**i for i in range(5)]
        self.down_conv = nnx.List([DoubleConv(i, o, batchnorm=False, rngs=rngs)
                                   for i, o in zip((in_channels, *w[:3]), w[:4])])
        self.middle_conv = DoubleConv(w[3], w[4], batchnorm=False, rngs=rngs)
        pairs = list(zip(w[:0:-1], w[-2::-1]))  # (1024, 512), ..., (128, 64)
        self.up_sample = nnx.List([ConvTranspose2d(i, o, 2, stride=2, rngs=rngs) for i, o in pairs])
        self.up_conv = nnx.List([DoubleConv(i, o, batchnorm=False, rngs=rngs) for i, o in pairs])
        self.final_conv = Conv2d(w[0], out_channels, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(x, self.config.in_channels, 16, "labml_unet")
        pass_through = []
        for down in self.down_conv:
            x = down(x)
            pass_through.append(x)
            x = max_pool2(x)
        x = self.middle_conv(x)
        for up, conv_block in zip(self.up_sample, self.up_conv):
            x = up(x)
            skip = center_crop(pass_through.pop(), x.shape[1], x.shape[2])
            x = conv_block(jnp.concatenate([x, skip], axis=-1))  # upsampled first
        return self.final_conv(x)


def key_map(config: LabmlUNetConfig):
    middle = SEED_BOTTLENECK if config.seed_spelling else "middle_conv"
    rules = []
    for torch, flax in (("down_conv.{i}", "down_conv.{i}"), (middle, "middle_conv"),
                        ("up_conv.{i}", "up_conv.{i}")):
        rules += double_conv_rules(flax, (f"{torch}.first", f"{torch}.second"))
    return rules + conv_t("up_sample.{i}.up", "up_sample.{i}") + conv("final_conv")


def infer(shapes: registry.KeyShapes) -> LabmlUNetConfig | None:
    if "down_conv.0.first.weight" not in shapes or "final_conv.weight" not in shapes:
        return None
    width, in_channels = shapes["down_conv.0.first.weight"][:2]
    return LabmlUNetConfig(in_channels=in_channels, out_channels=shapes["final_conv.weight"][0],
                           base_width=width,
                           seed_spelling=f"{SEED_BOTTLENECK}.first.weight" in shapes)


registry.register(registry.Arch(
    name="labml_unet", model=LabmlUNet, config=LabmlUNetConfig, key_map=key_map, infer=infer,
    uniform={"num_classes": "out_channels", "in_channels": "in_channels"},
    source="labmlai/annotated_deep_learning_paper_implementations labml_nn/unet `UNet`",
    train_defaults=registry.NO_BATCHNORM_TRAINING))
