"""UNet++ with `ContinusParalleConv` and deep supervision (the widely copied blog code;
the seed's text is the spec, there is no authoritative upstream).

Post-BN stages `stage_0..4`, pre-BN nested blocks `CONVi_j` (ending on a raw conv),
ConvTranspose2d k4 s2 p1 upsampling, concat [upsampled, skips by increasing j], and four
BN-ReLU-conv heads that always exist. `in_channels` (the seed fixes 3) and `base_width`
(default 64) are our extensions.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.models.blocks import DoubleConv, double_conv_rules
from unet_jax.models.keymap import bn, conv, conv_t
from unet_jax.nn import (
    BatchNorm,
    Conv2d,
    ConvTranspose2d,
    check_input,
    max_pool2,
    require_same_size,
)

VALID_SIZES = "unetpp takes H and W that are multiples of 16; the output has the input size."
# (i, j) of every nested node CONVi_j, in the order the forward pass computes them.
NODES = ((0, 1), (1, 1), (2, 1), (3, 1), (2, 2), (1, 2), (1, 3), (0, 2), (0, 3), (0, 4))


@dataclasses.dataclass(frozen=True)
class UnetPlusPlusConfig:
    num_classes: int  # output channels of each head
    deep_supervision: bool  # return the four heads' outputs, not only final_super_0_4
    in_channels: int  # input image channels (3 in the seed)
    base_width: int  # width of stage_0; upstream 64 (64, 128, ..., 1024)


class PreBNDoubleConv(nnx.Module):
    """`ContinusParalleConv(pre_Batch_Norm=True)`: BN, ReLU, Conv, BN, ReLU, Conv (no final
    activation)."""

    def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
        self.bn1 = BatchNorm(in_ch)
        self.conv1 = Conv2d(in_ch, out_ch, 3, padding=1, rngs=rngs)
        self.bn2 = BatchNorm(out_ch)
        self.conv2 = Conv2d(out_ch, out_ch, 3, padding=1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv2(nnx.relu(self.bn2(self.conv1(nnx.relu(self.bn1(x))))))


class Head(nnx.Module):
    """`final_super_0_k`: Sequential(BN(64), ReLU, Conv2d(64, num_classes, 3, padding=1))."""

    def __init__(self, in_ch: int, num_classes: int, *, rngs: nnx.Rngs):
        self.bn = BatchNorm(in_ch)
        self.conv = Conv2d(in_ch, num_classes, 3, padding=1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(nnx.relu(self.bn(x)))


class UnetPlusPlus(nnx.Module):
    """`UnetPlusPlus(num_classes, deep_supervision)`; returns a list of the four head
    outputs with deep supervision, else `final_super_0_4`'s."""

    def __init__(self, num_classes: int = 2, deep_supervision: bool = False,
                 in_channels: int = 3, base_width: int = 64, *, rngs: nnx.Rngs):
        self.config = UnetPlusPlusConfig(num_classes, deep_supervision, in_channels, base_width)
        w = [base_width * 2**i for i in range(5)]
        for i, (cin, cout) in enumerate(zip((in_channels, *w[:4]), w)):
            setattr(self, f"stage_{i}", DoubleConv(cin, cout, rngs=rngs))
        for i, j in NODES:
            setattr(self, f"CONV{i}_{j}", PreBNDoubleConv(w[i] * (j + 1), w[i], rngs=rngs))
            setattr(self, f"upsample_{i}_{j}",
                    ConvTranspose2d(w[i + 1], w[i], 4, stride=2, padding=1, rngs=rngs))
        for k in range(1, 5):
            setattr(self, f"final_super_0_{k}", Head(w[0], num_classes, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array | list[jax.Array]:
        check_input(x, self.config.in_channels, 16, "unetpp")
        nodes = {(0, 0): self.stage_0(x)}
        for i in range(1, 5):
            nodes[i, 0] = getattr(self, f"stage_{i}")(max_pool2(nodes[i - 1, 0]))
        for i, j in NODES:
            up = getattr(self, f"upsample_{i}_{j}")(nodes[i + 1, j - 1])
            require_same_size(nodes[i, 0], up, VALID_SIZES)
            cat = jnp.concatenate([up] + [nodes[i, k] for k in range(j)], axis=-1)
            nodes[i, j] = getattr(self, f"CONV{i}_{j}")(cat)
        if self.config.deep_supervision:
            return [getattr(self, f"final_super_0_{k}")(nodes[0, k]) for k in range(1, 5)]
        return self.final_super_0_4(nodes[0, 4])


def key_map(config: UnetPlusPlusConfig):
    s, c, h = "stage_{i}", "CONV{i}_{j}", "final_super_0_{k}"
    rules = double_conv_rules(s, (f"{s}.Conv_forward.0", f"{s}.Conv_forward.3"),
                              (f"{s}.Conv_forward.1", f"{s}.Conv_forward.4"))
    rules += bn(f"{c}.Conv_forward.0", f"{c}.bn1") + conv(f"{c}.Conv_forward.2", f"{c}.conv1")
    rules += bn(f"{c}.Conv_forward.3", f"{c}.bn2") + conv(f"{c}.Conv_forward.5", f"{c}.conv2")
    rules += conv_t("upsample_{i}_{j}")
    return rules + bn(f"{h}.0", f"{h}.bn") + conv(f"{h}.2", f"{h}.conv")


def infer(shapes: registry.KeyShapes) -> UnetPlusPlusConfig | None:
    if "stage_0.Conv_forward.0.weight" not in shapes or "CONV0_4.Conv_forward.2.weight" not in shapes:
        return None
    width, in_channels = shapes["stage_0.Conv_forward.0.weight"][:2]
    # All four heads always exist, so deep supervision cannot be read off the weights.
    return UnetPlusPlusConfig(num_classes=shapes["final_super_0_4.2.weight"][0],
                              deep_supervision=False, in_channels=in_channels, base_width=width)


registry.register(registry.Arch(
    name="unetpp", model=UnetPlusPlus, config=UnetPlusPlusConfig, key_map=key_map, infer=infer,
    uniform={"num_classes": "num_classes", "in_channels": "in_channels"},
    source="UNet++ `UnetPlusPlus` / `ContinusParalleConv` (blog code, seed 003)",
    preprocess="imagenet"))  # the seed's CamVid loader: albumentations Normalize()
