"""LeeJunHyun/Image_Segmentation `U_Net` (network.py).

Padded conv-BN-ReLU blocks, nearest x2 upsampling followed by conv-BN-ReLU, concat
[skip, upsampled]. `base_width` (default 64, the upstream widths) is our extension.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.convert.keymap import bn, conv
from unet_jax.models.blocks import ConvBNReLU, DoubleConv, double_conv_rules
from unet_jax.nn import Conv2d, check_input, max_pool2, require_same_size, upsample_nearest2

VALID_SIZES = "imgseg_unet takes H and W that are multiples of 16; the output has the input size."


@dataclasses.dataclass(frozen=True)
class ImgsegUNetConfig:
    img_ch: int  # input image channels
    output_ch: int  # output channels of `Conv_1x1`
    base_width: int  # width of the first stage; upstream 64 (64, 128, ..., 1024)


class UpConv(nnx.Module):
    """`up_conv`: Sequential(Upsample(scale_factor=2) [nearest], Conv3x3, BN, ReLU)."""

    def __init__(self, ch_in: int, ch_out: int, *, rngs: nnx.Rngs):
        self.up = ConvBNReLU(ch_in, ch_out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.up(upsample_nearest2(x))


class ImgsegUNet(nnx.Module):
    """`U_Net(img_ch, output_ch)`; input a multiple of 16, output the input size."""

    def __init__(self, img_ch: int = 3, output_ch: int = 1, base_width: int = 64, *,
                 rngs: nnx.Rngs):
        self.config = ImgsegUNetConfig(img_ch, output_ch, base_width)
        w = [base_width * 2**i for i in range(5)]
        for k, (cin, cout) in enumerate(zip((img_ch, *w[:4]), w), start=1):
            setattr(self, f"Conv{k}", DoubleConv(cin, cout, rngs=rngs))
        for k in (5, 4, 3, 2):
            setattr(self, f"Up{k}", UpConv(w[k - 1], w[k - 2], rngs=rngs))
            setattr(self, f"Up_conv{k}", DoubleConv(w[k - 1], w[k - 2], rngs=rngs))
        self.Conv_1x1 = Conv2d(w[0], output_ch, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(x, self.config.img_ch, 16, "imgseg_unet")
        x1 = self.Conv1(x)
        x2 = self.Conv2(max_pool2(x1))
        x3 = self.Conv3(max_pool2(x2))
        x4 = self.Conv4(max_pool2(x3))
        d = self.Conv5(max_pool2(x4))
        for k, skip in zip((5, 4, 3, 2), (x4, x3, x2, x1)):
            d = getattr(self, f"Up{k}")(d)
            require_same_size(skip, d, VALID_SIZES)
            d = getattr(self, f"Up_conv{k}")(jnp.concatenate([skip, d], axis=-1))  # skip first
        return self.Conv_1x1(d)


def key_map(config: ImgsegUNetConfig):
    rules = []
    for m in ("Conv{k}", "Up_conv{k}"):
        rules += double_conv_rules(m, (f"{m}.conv.0", f"{m}.conv.3"), (f"{m}.conv.1", f"{m}.conv.4"))
    rules += conv("Up{k}.up.1", "Up{k}.up.conv") + bn("Up{k}.up.2", "Up{k}.up.bn")
    return rules + conv("Conv_1x1")


def infer(shapes: registry.Shapes) -> ImgsegUNetConfig | None:
    if "Conv1.conv.0.weight" not in shapes or "Conv_1x1.weight" not in shapes:
        return None
    width, img_ch = shapes["Conv1.conv.0.weight"][:2]
    return ImgsegUNetConfig(img_ch=img_ch, output_ch=shapes["Conv_1x1.weight"][0],
                            base_width=width)


registry.register(registry.Arch(
    name="imgseg_unet", model=ImgsegUNet, config=ImgsegUNetConfig, key_map=key_map, infer=infer,
    uniform={"num_classes": "output_ch", "in_channels": "img_ch"},
    source="LeeJunHyun/Image_Segmentation network.py `U_Net`", preprocess="imgseg"))
