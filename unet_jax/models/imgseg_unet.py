"""LeeJunHyun/Image_Segmentation network.py: `U_Net`, `AttU_Net`, `R2U_Net`, `R2AttU_Net`.

One encoder-decoder in four variants: stages of two padded conv-BN-ReLUs (`conv_block`) or
recurrent residual blocks (`RRCNN_block`: a 1x1 conv, then two `Recurrent_block`s whose one
conv runs t+1 times, plus the 1x1 output); nearest x2 upsampling then conv-BN-ReLU
(`up_conv`); concat [skip, upsampled], the skip gated first by an `Attention_block` in the
attention variants. `base_width` (default 64, the upstream widths) is our extension.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.models.blocks import ConvBNReLU, DoubleConv, double_conv_rules
from unet_jax.models.keymap import bn, conv
from unet_jax.nn import Conv2d, check_input, gate, max_pool2, require_same_size, upsample_nearest2

VALID_SIZES = "{arch} takes H and W that are multiples of 16; the output has the input size."


@dataclasses.dataclass(frozen=True)
class ImgsegUNetConfig:
    img_ch: int  # input image channels
    output_ch: int  # output channels of `Conv_1x1`
    base_width: int  # width of the first stage; upstream 64 (64, 128, ..., 1024)


@dataclasses.dataclass(frozen=True)
class AttUNetConfig(ImgsegUNetConfig):
    pass


@dataclasses.dataclass(frozen=True)
class R2UNetConfig(ImgsegUNetConfig):
    t: int  # recurrences of `Recurrent_block` (its conv runs t + 1 times); not in the weights


@dataclasses.dataclass(frozen=True)
class R2AttUNetConfig(R2UNetConfig):
    pass


# arch -> (config, upstream class, recurrent, attention)
VARIANTS = {
    "imgseg_unet": (ImgsegUNetConfig, "U_Net", False, False),
    "attu_net": (AttUNetConfig, "AttU_Net", False, True),
    "r2u_net": (R2UNetConfig, "R2U_Net", True, False),
    "r2attu_net": (R2AttUNetConfig, "R2AttU_Net", True, True),
}


class UpConv(nnx.Module):
    """`up_conv`: Sequential(Upsample(scale_factor=2) [nearest], Conv3x3, BN, ReLU)."""

    def __init__(self, ch_in: int, ch_out: int, *, rngs: nnx.Rngs):
        self.up = ConvBNReLU(ch_in, ch_out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.up(upsample_nearest2(x))


class RecurrentBlock(nnx.Module):
    """`Recurrent_block(ch, t)`: x1 = conv(x), then t times x1 = conv(x + x1); one shared
    conv-BN-ReLU (its BatchNorm statistics update on every application, as in torch)."""

    def __init__(self, ch: int, t: int, *, rngs: nnx.Rngs):
        self.conv = ConvBNReLU(ch, ch, rngs=rngs)
        self.t = t

    def __call__(self, x: jax.Array) -> jax.Array:
        x1 = self.conv(x)
        for _ in range(self.t):
            x1 = self.conv(x + x1)
        return x1


class RRCNNBlock(nnx.Module):
    """`RRCNN_block(ch_in, ch_out, t)`: x = Conv_1x1(x); x + RCNN(x), RCNN two recurrent blocks."""

    def __init__(self, ch_in: int, ch_out: int, t: int, *, rngs: nnx.Rngs):
        self.Conv_1x1 = Conv2d(ch_in, ch_out, 1, rngs=rngs)
        self.RCNN = nnx.List([RecurrentBlock(ch_out, t, rngs=rngs) for _ in range(2)])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.Conv_1x1(x)
        y = x
        for block in self.RCNN:
            y = block(y)
        return x + y


class AttentionBlock(nnx.Module):
    """`Attention_block(F_g, F_l, F_int)`: x * sigmoid(BN(psi(relu(BN(W_g g) + BN(W_x x)))))
    with 1x1 convs; psi ends in one channel."""

    def __init__(self, f_g: int, f_l: int, f_int: int, *, rngs: nnx.Rngs):
        self.W_g = ConvBNReLU(f_g, f_int, kernel_size=1, padding=0, relu=False, rngs=rngs)
        self.W_x = ConvBNReLU(f_l, f_int, kernel_size=1, padding=0, relu=False, rngs=rngs)
        self.psi = ConvBNReLU(f_int, 1, kernel_size=1, padding=0, relu=False, rngs=rngs)

    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        return gate(x, nnx.sigmoid(self.psi(nnx.relu(self.W_g(g) + self.W_x(x)))))


class ImgsegUNet(nnx.Module):
    """`U_Net(img_ch, output_ch)` and, by `variant`, `AttU_Net`, `R2U_Net(t)`, `R2AttU_Net(t)`;
    input a multiple of 16, output the input size."""

    def __init__(self, img_ch: int = 3, output_ch: int = 1, base_width: int = 64, t: int = 2, *,
                 variant: str = "imgseg_unet", rngs: nnx.Rngs):
        config_cls, _, recurrent, attention = VARIANTS[variant]
        if recurrent and t < 1:
            raise ValueError(f"{variant}: t must be >= 1 (the upstream loop needs one pass), got {t}")
        extra = {"t": t} if recurrent else {}
        self.config = config_cls(img_ch=img_ch, output_ch=output_ch, base_width=base_width, **extra)
        self.variant = variant
        w = [base_width * 2**i for i in range(5)]

        def stage(cin: int, cout: int) -> nnx.Module:
            return (RRCNNBlock(cin, cout, t, rngs=rngs) if recurrent
                    else DoubleConv(cin, cout, rngs=rngs))

        encoder, decoder = ("RRCNN{k}", "Up_RRCNN{k}") if recurrent else ("Conv{k}", "Up_conv{k}")
        self.names = encoder, decoder
        for k, (cin, cout) in enumerate(zip((img_ch, *w[:4]), w), start=1):
            setattr(self, encoder.format(k=k), stage(cin, cout))
        for k in (5, 4, 3, 2):
            setattr(self, f"Up{k}", UpConv(w[k - 1], w[k - 2], rngs=rngs))
            if attention:
                setattr(self, f"Att{k}", AttentionBlock(w[k - 2], w[k - 2], w[k - 2] // 2, rngs=rngs))
            setattr(self, decoder.format(k=k), stage(w[k - 1], w[k - 2]))
        self.attention = attention
        self.Conv_1x1 = Conv2d(w[0], output_ch, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(x, self.config.img_ch, 16, self.variant)
        encoder, decoder = self.names
        skips = [getattr(self, encoder.format(k=1))(x)]
        for k in (2, 3, 4, 5):
            skips.append(getattr(self, encoder.format(k=k))(max_pool2(skips[-1])))
        d = skips.pop()
        for k in (5, 4, 3, 2):
            d = getattr(self, f"Up{k}")(d)
            skip = skips.pop()
            require_same_size(skip, d, VALID_SIZES.format(arch=self.variant))
            if self.attention:
                skip = getattr(self, f"Att{k}")(g=d, x=skip)
            d = getattr(self, decoder.format(k=k))(jnp.concatenate([skip, d], axis=-1))  # skip first
        return self.Conv_1x1(d)


def key_map(config: ImgsegUNetConfig):
    if isinstance(config, R2UNetConfig):
        rules = []
        for m in ("RRCNN{k}", "Up_RRCNN{k}"):
            rules += conv(f"{m}.Conv_1x1")
            rules += conv(f"{m}.RCNN.{{i}}.conv.0", f"{m}.RCNN.{{i}}.conv.conv")
            rules += bn(f"{m}.RCNN.{{i}}.conv.1", f"{m}.RCNN.{{i}}.conv.bn")
    else:
        rules = []
        for m in ("Conv{k}", "Up_conv{k}"):
            rules += double_conv_rules(m, (f"{m}.conv.0", f"{m}.conv.3"), (f"{m}.conv.1", f"{m}.conv.4"))
    rules += conv("Up{k}.up.1", "Up{k}.up.conv") + bn("Up{k}.up.2", "Up{k}.up.bn")
    if isinstance(config, AttUNetConfig | R2AttUNetConfig):
        for gate in ("W_g", "W_x", "psi"):
            rules += conv(f"Att{{k}}.{gate}.0", f"Att{{k}}.{gate}.conv")
            rules += bn(f"Att{{k}}.{gate}.1", f"Att{{k}}.{gate}.bn")
    return rules + conv("Conv_1x1")


def _infer(shapes: registry.KeyShapes, *, arch: str):
    """Plain vs recurrent stages by their first key, plain vs attention by `Att5.*`; `t` is
    not in the weights (one shared conv): upstream's default 2 is assumed."""
    config_cls, _, recurrent, attention = VARIANTS[arch]
    first = "RRCNN1.Conv_1x1.weight" if recurrent else "Conv1.conv.0.weight"
    if first not in shapes or "Conv_1x1.weight" not in shapes or \
            ("Att5.psi.0.weight" in shapes) != attention:
        return None
    width, img_ch = shapes[first][:2]
    extra = {"t": 2} if recurrent else {}
    return config_cls(img_ch=img_ch, output_ch=shapes["Conv_1x1.weight"][0], base_width=width, **extra)


for _arch, (_config, _upstream, _, _) in VARIANTS.items():
    registry.register(registry.Arch(
        name=_arch, model=functools.partial(ImgsegUNet, variant=_arch), config=_config,
        key_map=key_map, infer=functools.partial(_infer, arch=_arch),
        uniform={"num_classes": "output_ch", "in_channels": "img_ch"},
        source=f"LeeJunHyun/Image_Segmentation network.py `{_upstream}`", preprocess="imgseg"))
