"""What a checkpoint that fits no ported arch looks like: its project and network, read off
the key names, so the error can say what the file is and what to do.

Each family is a set of key patterns (regexes searched over the keys as stored in the file,
wrapper prefixes included); the first family all of whose patterns match some key wins.
"""

import dataclasses
import re
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Family:
    project: str  # the upstream project, as users name it
    network: str  # its class name there
    patterns: tuple[str, ...]  # every one must match some key
    ported: str | None = None  # our arch, when this network is ported (for some encoders)


SMP = "segmentation_models_pytorch"
MONAI = "MONAI"
NNUNET = "nnU-Net (dynamic_network_architectures)"
_HEAD = r"(^|\.)segmentation_head\.0\.weight$"

# Order matters where one network's keys contain another's (UPerNet has PSPNet's `psp`).
FAMILIES = (
    Family(SMP, "UnetPlusPlus", (r"(^|\.)decoder\.blocks\.x_\d+_\d+\.conv1\.", _HEAD), "smp_unetplusplus"),
    Family(SMP, "Unet", (r"(^|\.)decoder\.blocks\.\d+\.conv1\.", _HEAD), "smp_unet"),
    Family(SMP, "Linknet", (r"(^|\.)decoder\.blocks\.\d+\.block\.", _HEAD)),
    Family(SMP, "MAnet", (r"(^|\.)decoder\.center\.top_conv\.", _HEAD)),
    Family(SMP, "FPN", (r"(^|\.)decoder\.p5\.", _HEAD)),
    Family(SMP, "UPerNet", (r"(^|\.)decoder\.fpn_lateral_blocks\.", _HEAD)),
    Family(SMP, "PSPNet", (r"(^|\.)decoder\.psp\.", _HEAD)),
    Family(SMP, "PAN", (r"(^|\.)decoder\.fpa\.", _HEAD)),
    Family(SMP, "DeepLabV3Plus", (r"(^|\.)decoder\.aspp\.0\.convs\.", _HEAD)),
    Family(SMP, "DeepLabV3", (r"(^|\.)decoder\.aspp\.convs\.", _HEAD)),
    Family(SMP, "Segformer", (r"(^|\.)decoder\.mlp_stage\.", _HEAD)),
    Family(SMP, "DPT", (r"(^|\.)decoder\.reassemble_blocks\.", _HEAD)),
    Family(NNUNET, "ResidualEncoderUNet", (r"(^|\.)encoder\.stem\.convs\.", r"(^|\.)decoder\.seg_layers\.")),
    Family(NNUNET, "PlainConvUNet", (r"(^|\.)encoder\.stages\.\d+\.", r"(^|\.)decoder\.seg_layers\.")),
    Family(MONAI, "AttentionUnet", (r"\.attention\.W_g\.", r"\.attention\.psi\.")),
    Family(MONAI, "UNet", (r"^(model\.)?\d+\.(conv|residual)\.", r"\.(adn|submodule)\.")),
    Family(MONAI, "BasicUNet", (r"^conv_0\.conv_0\.conv\.", r"^upcat_\d\.")),
    Family(MONAI, "SegResNet", (r"^convInit\.conv\.", r"^down_layers\.")),
    Family(MONAI, "DynUNet", (r"^input_block\.conv1\.", r"^downsamples\.")),
    Family(MONAI, "UNETR", (r"^vit\.patch_embedding\.",)),
    Family(MONAI, "SwinUNETR", (r"^swinViT\.",)),
    Family("torchvision", "ResNet (an image classifier)", (r"^layer4\.", r"^fc\.weight$")),
    Family("torchvision", "VGG (an image classifier)", (r"^features\.\d+\.weight$",
                                                                 r"^classifier\.\d+\.weight$")),
)

# smp encoders, by the keys of their stems (the ResNet family is told apart by shapes below).
SMP_ENCODERS = (
    (r"(^|\.)encoder\._conv_stem\.", "efficientnet-b* (efficientnet-pytorch)"),
    (r"(^|\.)encoder\.conv_stem\.", "timm-efficientnet-b* / timm-style"),
    (r"(^|\.)encoder\.model\.", "a timm encoder (tu-*)"),
    (r"(^|\.)encoder\.patch_embed1\.", "mit_b* (Mix Transformer)"),
    (r"(^|\.)encoder\.layer0\.", "se_resnet* / senet154"),
    (r"(^|\.)encoder\.features\.denseblock", "densenet*"),
    (r"(^|\.)encoder\.features\.conv1_1\.", "dpn*"),
    (r"(^|\.)encoder\.stage0\.rbr_", "mobileone_s*"),
    (r"(^|\.)encoder\.features\.\d+\.conv\.", "mobilenet_v2 / inception*"),
    (r"(^|\.)encoder\.features\.\d+\.weight$", "vgg*"),
    (r"(^|\.)encoder\.block1\.", "xception"),
)


@dataclasses.dataclass(frozen=True)
class Recognized:
    family: Family
    encoder: str | None  # smp only: the encoder family, when recognisable

    @property
    def ported(self) -> bool:
        """A ported arch takes this network with this encoder."""
        return self.family.ported is not None and (self.encoder or "").startswith("resnet")

    def describe(self) -> str:
        f = self.family
        with_encoder = f" (encoder: {self.encoder})" if self.encoder else ""
        return f"{f.network} from {f.project}{with_encoder}"


def _resnet_kind(shapes: Mapping[str, tuple]) -> str | None:
    """resnet18 / 34 / 50-style, or resnext (grouped 3x3 convs), from smp encoder keys."""
    prefix = next((k[: -len("encoder.layer1.0.conv2.weight")] for k in shapes
                   if k.endswith("encoder.layer1.0.conv2.weight")), None)
    if prefix is None or f"{prefix}encoder.conv1.weight" not in shapes:
        return None
    out_ch, in_per_group = shapes[f"{prefix}encoder.layer1.0.conv2.weight"][:2]
    if f"{prefix}encoder.layer1.0.conv3.weight" in shapes:
        return "resnext" if in_per_group != out_ch else "resnet50-style"
    return "resnet34-style" if f"{prefix}encoder.layer1.2.conv1.weight" in shapes else "resnet18-style"


def recognize(shapes: Mapping[str, tuple]) -> Recognized | None:
    """The family of a checkpoint with these keys (as stored) and shapes, or None."""
    keys = list(shapes)
    for family in FAMILIES:
        if all(any(re.search(p, k) for k in keys) for p in family.patterns):
            encoder = None
            if family.project == SMP:
                encoder = _resnet_kind(shapes) or next(
                    (name for p, name in SMP_ENCODERS if any(re.search(p, k) for k in keys)), None)
            return Recognized(family, encoder)
    return None
