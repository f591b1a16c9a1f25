"""segmentation_models_pytorch (smp) `Unet` and `UnetPlusPlus` with torchvision ResNet
encoders (`resnet18`, `resnet34`, `resnet50`): decoders/unet, decoders/unetplusplus,
encoders/resnet.py, base/modules.py, base/heads.py.

Encoder `encoder.*` = torchvision ResNet less fc (stem max-pool padded by 1) with
`encoder_depth` taps after the input; decoder blocks = nearest upsampling (`Unet`: to the
skip's exact size, so any size works; `UnetPlusPlus`: a fixed x2, sides divisible by
2**depth), concat [upsampled, skips], optional scSE (`attention1`), two `Conv2dReLU`
(conv, BatchNorm or none, ReLU; the conv has a bias only without a norm), optional scSE
(`attention2`); `segmentation_head.0` a 3x3 conv. smp's `activation` is not part of the
model here (logits out; the weights do not depend on it). The decoder norm takes smp 0.6's
spellings (`get_norm_layer`: True/False, names in any case, {"type": name}) and its
deprecated `decoder_use_batchnorm`, which, when not None, wins over `decoder_use_norm`.
Checked against smp 0.6.0 itself by tests/test_smp_upstream.py.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.models.backbones import resnet
from unet_jax.models.keymap import Rule, bn, conv
from unet_jax.nn import BatchNorm, Conv2d, check_divisible, check_input, gate, resize_nearest

ENCODERS = tuple(resnet.BLOCKS)
NORMS = ("batchnorm", "identity")  # ported; smp 0.6 also has inplace, layernorm, instancenorm
SCSE_REDUCTION = 16  # SCSEModule(reduction=16): its cSE squeezes C to C // 16 channels


def decoder_norm(option: str, value) -> tuple[str | None, str | None]:
    """(norm, None) or (None, the problem) for one of smp's `use_norm` spellings
    (`base/modules.py get_norm_layer`): True / False, a norm name (any case), {"type": name}."""
    if value is True or value is False:
        return ("batchnorm" if value else "identity"), None
    kind = value.get("type") if isinstance(value, dict) else value
    if not isinstance(kind, str):
        return None, f"{option} {value!r} (True, False, a norm name or {{'type': name}})"
    kind = kind if isinstance(value, dict) else kind.lower()  # smp lowers only the plain name
    if kind == "inplace":
        return None, (f"{option} {value!r}: smp builds inplace_abn's InPlaceABN (needs the "
                      "inplace_abn package), which scales by abs(weight) + eps and fuses the "
                      "ReLU, so a BatchNorm would compute other outputs from its weights; not "
                      "ported (use 'batchnorm' or 'identity')")
    if kind not in NORMS:
        known = kind in ("layernorm", "instancenorm")
        return None, (f"{option} {value!r}: " + ("not ported" if known else "unknown to smp")
                      + " (ported: 'batchnorm' or True, 'identity' or False)")
    if isinstance(value, dict) and set(value) != {"type"}:
        return None, (f"{option} {value!r}: norm arguments {sorted(set(value) - {'type'})} "
                      "are not ported (only {'type': name})")
    return kind, None


@dataclasses.dataclass(frozen=True)
class SmpUnetConfig:
    encoder_name: str  # resnet18 | resnet34 | resnet50
    encoder_depth: int  # 3..5 stages used (the unused layers stay in the state_dict)
    decoder_channels: tuple  # one width per decoder block (encoder_depth of them)
    decoder_use_norm: str  # "batchnorm" (or True) | "identity" (or False); smp's spellings
    decoder_attention_type: str | None  # None | "scse"
    decoder_interpolation: str  # "nearest" (the only mode ported)
    in_channels: int  # input image channels
    classes: int  # output channels of the segmentation head
    # smp's deprecated name of decoder_use_norm (older configs and scripts): when not None it
    # wins, as in smp; folded into decoder_use_norm, so always None in a built config
    decoder_use_batchnorm: bool | str | None = None

    def __post_init__(self):
        object.__setattr__(self, "decoder_channels", tuple(self.decoder_channels))
        problems = []
        if self.encoder_name not in ENCODERS:
            problems.append(f"encoder_name {self.encoder_name!r} (ported: {', '.join(ENCODERS)})")
        if self.encoder_depth not in (3, 4, 5):
            problems.append(f"encoder_depth {self.encoder_depth} (3, 4 or 5)")
        if len(self.decoder_channels) != self.encoder_depth or min(self.decoder_channels, default=1) < 1:
            problems.append(f"decoder_channels {self.decoder_channels} ({self.encoder_depth} "
                            "positive widths, one per block)")
        option = "decoder_use_norm" if self.decoder_use_batchnorm is None else "decoder_use_batchnorm"
        norm, problem = decoder_norm(option, getattr(self, option))
        if problem:
            problems.append(problem)
        if self.decoder_attention_type not in (None, "scse"):
            problems.append(f"decoder_attention_type {self.decoder_attention_type!r} (None or scse)")
        elif self.decoder_attention_type and any(c < SCSE_REDUCTION for c in self.decoder_channels):
            problems.append(f"decoder_attention_type 'scse' with decoder_channels {self.decoder_channels}"
                            f" (each >= {SCSE_REDUCTION}: scSE squeezes a block's channels "
                            f"{SCSE_REDUCTION}-fold, and torch cannot run smp's zero-width conv of "
                            "a narrower one)")
        if self.decoder_interpolation != "nearest":
            problems.append(f"decoder_interpolation {self.decoder_interpolation!r} (nearest)")
        if problems:
            raise ValueError("smp model options not supported: " + "; ".join(problems))
        object.__setattr__(self, "decoder_use_norm", norm)  # one spelling, as smp resolves it
        object.__setattr__(self, "decoder_use_batchnorm", None)

    @property
    def batchnorm(self) -> bool:
        return self.decoder_use_norm == "batchnorm"


@dataclasses.dataclass(frozen=True)
class SmpUnetPlusPlusConfig(SmpUnetConfig):
    pass


class Conv2dReLU(nnx.Module):
    """`md.Conv2dReLU`: Sequential(Conv2d 3x3 (bias only without a norm), BatchNorm | Identity, ReLU)."""

    def __init__(self, in_ch: int, out_ch: int, batchnorm: bool, *, rngs: nnx.Rngs):
        self.conv = Conv2d(in_ch, out_ch, 3, padding=1, bias=not batchnorm, rngs=rngs)
        self.bn = BatchNorm(out_ch) if batchnorm else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        return nnx.relu(x if self.bn is None else self.bn(x))


class SCSE(nnx.Module):
    """`SCSEModule(C, reduction=16)`: x * cSE(x) + x * sSE(x); cSE = avg-pool, 1x1 C -> C/16,
    ReLU, 1x1 -> C, sigmoid; sSE = 1x1 C -> 1, sigmoid."""

    def __init__(self, ch: int, *, rngs: nnx.Rngs):
        self.cSE1 = Conv2d(ch, ch // 16, 1, rngs=rngs)
        self.cSE3 = Conv2d(ch // 16, ch, 1, rngs=rngs)
        self.sSE0 = Conv2d(ch, 1, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # AdaptiveAvgPool2d(1): accumulated in at least float32 (bf16 sums drift), never
        # below the input's precision (a float32 mean of float64 features is ~1e-7 off)
        wide = jnp.promote_types(x.dtype, jnp.float32)
        c = jnp.mean(x, axis=(1, 2), keepdims=True, dtype=wide).astype(x.dtype)
        c = nnx.sigmoid(self.cSE3(nnx.relu(self.cSE1(c))))
        return gate(x, c) + gate(x, nnx.sigmoid(self.sSE0(x)))


class DecoderBlock(nnx.Module):
    """`UnetDecoderBlock` / UnetPlusPlus `DecoderBlock`: upsample (nearest) to (h, w), cat
    [x, skip] and attention1 (with a skip), conv1, conv2, attention2."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, config: SmpUnetConfig, *,
                 rngs: nnx.Rngs):
        scse = config.decoder_attention_type == "scse"
        self.conv1 = Conv2dReLU(in_ch + skip_ch, out_ch, config.batchnorm, rngs=rngs)
        self.conv2 = Conv2dReLU(out_ch, out_ch, config.batchnorm, rngs=rngs)
        # built without a skip too (then unused), as upstream: its keys are in the state_dict
        self.attention1 = SCSE(in_ch + skip_ch, rngs=rngs) if scse else None
        self.attention2 = SCSE(out_ch, rngs=rngs) if scse else None

    def __call__(self, x: jax.Array, skip: jax.Array | None, size: tuple[int, int]) -> jax.Array:
        x = resize_nearest(x, *size)
        if skip is not None:
            x = jnp.concatenate([x, skip], axis=-1)
            x = x if self.attention1 is None else self.attention1(x)
        x = self.conv2(self.conv1(x))
        return x if self.attention2 is None else self.attention2(x)


class Blocks(nnx.Module):
    """`nn.ModuleDict` of UnetPlusPlus blocks, attributes `x_{depth}_{layer}`."""


class SmpUnet(nnx.Module):
    """smp `Unet(encoder_name, ...)` or, with `plus_plus`, `UnetPlusPlus`; logits of the
    input size."""

    def __init__(self, encoder_name: str = "resnet34", encoder_depth: int = 5,
                 decoder_channels: tuple = (256, 128, 64, 32, 16),
                 decoder_use_norm: str | bool = "batchnorm", decoder_attention_type: str | None = None,
                 decoder_interpolation: str = "nearest", in_channels: int = 3, classes: int = 1, *,
                 decoder_use_batchnorm: bool | str | None = None, plus_plus: bool = False,
                 rngs: nnx.Rngs):
        config_cls = SmpUnetPlusPlusConfig if plus_plus else SmpUnetConfig
        self.config = config = config_cls(encoder_name, encoder_depth, decoder_channels,
                                          decoder_use_norm, decoder_attention_type,
                                          decoder_interpolation, in_channels, classes,
                                          decoder_use_batchnorm)
        self.plus_plus = plus_plus
        self.encoder = resnet.ResNet(encoder_name, in_channels, depth=encoder_depth, rngs=rngs)
        enc = resnet.channels(encoder_name)[:encoder_depth][::-1]  # head first, input dropped
        head, skips, outs = enc[0], (*enc[1:], 0), config.decoder_channels
        ins = (head, *outs[:-1])
        if plus_plus:
            self.blocks = Blocks()
            for layer in range(encoder_depth - 1):
                for depth in range(layer + 1):
                    if depth == 0:
                        block = (ins[layer], skips[layer] * (layer + 1), outs[layer])
                    else:
                        block = (skips[layer - 1], skips[layer] * (layer + 1 - depth), skips[layer])
                    setattr(self.blocks, f"x_{depth}_{layer}", DecoderBlock(*block, config, rngs=rngs))
            setattr(self.blocks, f"x_0_{encoder_depth - 1}",
                    DecoderBlock(ins[-1], 0, outs[-1], config, rngs=rngs))
        else:
            self.blocks = nnx.List([DecoderBlock(i, s, o, config, rngs=rngs)
                                    for i, s, o in zip(ins, skips, outs)])
        self.segmentation_head = Conv2d(outs[-1], classes, 3, padding=1, rngs=rngs)

    @property
    def arch(self) -> str:
        return "smp_unetplusplus" if self.plus_plus else "smp_unet"

    def __call__(self, x: jax.Array) -> jax.Array:
        depth = self.config.encoder_depth
        check_input(x, self.config.in_channels, 2**depth, self.arch)
        if self.plus_plus:
            check_divisible(x, 2**depth, self.arch)
        features = self.encoder(x)
        sizes = [f.shape[1:3] for f in (x, *features)][::-1]
        features = features[::-1]
        if self.plus_plus:
            out = self._dense(features)
        else:
            out = features[0]
            for i, block in enumerate(self.blocks):
                out = block(out, features[i + 1] if i + 1 < len(features) else None, sizes[i + 1])
        return self.segmentation_head(out)

    def _dense(self, features: list[jax.Array]) -> jax.Array:
        """UnetPlusPlusDecoder.forward: the nested skip grid, x2 upsampling throughout."""
        n = len(features) - 1
        up2 = lambda x: (2 * x.shape[1], 2 * x.shape[2])  # noqa: E731
        dense = {}
        for layer in range(n):
            for depth in range(n - layer):
                name = f"x_{depth}_{depth + layer}"
                block = getattr(self.blocks, name)
                if layer == 0:
                    prev, skip = features[depth], features[depth + 1]
                else:
                    top = depth + layer
                    skip = jnp.concatenate([dense[f"x_{i}_{top}"] for i in range(depth + 1, top + 1)]
                                           + [features[top + 1]], axis=-1)
                    prev = dense[f"x_{depth}_{top - 1}"]
                dense[name] = block(prev, skip, up2(prev))
        last = dense[f"x_0_{n - 1}"]
        return getattr(self.blocks, f"x_0_{n}")(last, None, up2(last))


def key_map(config: SmpUnetConfig) -> list[Rule]:
    rules = resnet.key_map("encoder.", "encoder.", config.encoder_name)
    block = "x_{d}_{l}" if isinstance(config, SmpUnetPlusPlusConfig) else "{i}"
    b = f"decoder.blocks.{block}"
    for k in (1, 2):
        rules += conv(f"{b}.conv{k}.0", f"blocks.{block}.conv{k}.conv", bias=not config.batchnorm)
        if config.batchnorm:
            rules += bn(f"{b}.conv{k}.1", f"blocks.{block}.conv{k}.bn")
        if config.decoder_attention_type == "scse":
            a, f = f"{b}.attention{k}.attention", f"blocks.{block}.attention{k}"
            rules += conv(f"{a}.cSE.1", f"{f}.cSE1") + conv(f"{a}.cSE.3", f"{f}.cSE3")
            rules += conv(f"{a}.sSE.0", f"{f}.sSE0")
    return rules + conv("segmentation_head.0", "segmentation_head")


def infer(shapes: registry.KeyShapes, *, plus_plus: bool):
    """ResNet kind from the blocks (resnet50: conv3; resnet18 vs 34: layer1.2 present), depth
    from the decoder's block count, widths, norm (decoder BatchNorm keys) and scse keys."""
    if "encoder.conv1.weight" not in shapes or "segmentation_head.0.weight" not in shapes:
        return None
    keys = set(shapes)
    if plus_plus != any(k.startswith("decoder.blocks.x_") for k in keys):
        return None
    name = ("resnet50" if "encoder.layer1.0.conv3.weight" in keys
            else "resnet34" if "encoder.layer1.2.conv1.weight" in keys else "resnet18")
    if plus_plus:
        depth = 1 + max(int(k.split(".")[2].split("_")[2]) for k in keys
                        if k.startswith("decoder.blocks.x_0_"))
        widths = [shapes[f"decoder.blocks.x_0_{i}.conv1.0.weight"][0] for i in range(depth)]
    else:
        depth = len({k.split(".")[2] for k in keys if k.startswith("decoder.blocks.")})
        widths = [shapes[f"decoder.blocks.{i}.conv1.0.weight"][0] for i in range(depth)]
    first = "decoder.blocks.x_0_0" if plus_plus else "decoder.blocks.0"
    config_cls = SmpUnetPlusPlusConfig if plus_plus else SmpUnetConfig
    return config_cls(
        encoder_name=name, encoder_depth=depth, decoder_channels=tuple(widths),
        decoder_use_norm="batchnorm" if f"{first}.conv1.1.weight" in keys else "identity",
        decoder_attention_type="scse" if f"{first}.attention2.attention.sSE.0.weight" in keys else None,
        decoder_interpolation="nearest", in_channels=shapes["encoder.conv1.weight"][1],
        classes=shapes["segmentation_head.0.weight"][0])


# torchvision resnet18 / 34 / 50 ImageNet files fill `encoder` (smp's `encoder_weights="imagenet"`)
ENCODER = registry.Backbone(
    attribute="encoder", network=lambda c: c.encoder_name,
    module=lambda c, rngs: resnet.ResNet(c.encoder_name, c.in_channels, depth=c.encoder_depth,
                                         rngs=rngs),
    key_map=lambda c: resnet.key_map("", "", c.encoder_name))

for _name, _plus, _config, _sizes in (
        ("smp_unet", False, SmpUnetConfig, registry.SizeRule(step=1, minimum=32)),
        ("smp_unetplusplus", True, SmpUnetPlusPlusConfig, registry.SizeRule(32, 32))):
    registry.register(registry.Arch(
        name=_name, model=functools.partial(SmpUnet, plus_plus=_plus), config=_config,
        key_map=key_map, infer=functools.partial(infer, plus_plus=_plus),
        uniform={"num_classes": "classes", "in_channels": "in_channels"},
        source=f"segmentation_models_pytorch `{'UnetPlusPlus' if _plus else 'Unet'}` (ResNet encoders)",
        sizes=_sizes, preprocess="imagenet", backbone=ENCODER))
