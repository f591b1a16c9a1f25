"""segmentation_models_pytorch 0.6.0 `Unet` / `UnetPlusPlus` with torchvision ResNet
encoders, with smp's module names and key layout (encoders/resnet.py ResNetEncoder,
decoders/unet/decoder.py, decoders/unetplusplus/decoder.py, base/modules.py Conv2dReLU /
SCSEModule / Attention, base/heads.py SegmentationHead). Changed: torchvision's ResNet is
written out (same attributes) so neither torchvision nor smp is needed (the `parity` and
`convert` commands and `unet-jax demo` run with torch alone); only the options unet-jax
ports (BatchNorm or no decoder norm, also under the deprecated `decoder_use_batchnorm`, scse
or no attention, nearest interpolation, no activation or aux head). Checked against the real
smp package (equal outputs on the same state_dict, float64 and float32) by
tests/test_smp_upstream.py."""

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYERS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetEncoder(nn.Module):
    def __init__(self, name, in_channels=3, depth=5):
        super().__init__()
        kind, layers = LAYERS[name]
        block = BasicBlock if kind == "basic" else Bottleneck
        self._depth = depth
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for n, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            setattr(self, f"layer{n}", self._make_layer(block, planes, blocks, 1 if n == 1 else 2))
        self.out_channels = [in_channels, 64] + [p * block.expansion for p in (64, 128, 256, 512)]

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            out = planes * block.expansion
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride, bias=False),
                                       nn.BatchNorm2d(out))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        features = [x]
        x = self.relu(self.bn1(self.conv1(x)))
        features.append(x)
        x = self.maxpool(x)
        for n in range(1, self._depth):
            x = getattr(self, f"layer{n}")(x)
            features.append(x)
        return features


class Conv2dReLU(nn.Sequential):
    def __init__(self, in_channels, out_channels, use_norm):
        norm = nn.BatchNorm2d(out_channels) if use_norm else nn.Identity()
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not use_norm),
                         norm, nn.ReLU(inplace=True))


class SCSEModule(nn.Module):
    def __init__(self, in_channels, reduction=16):
        super().__init__()
        self.cSE = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, in_channels // reduction, 1),
                                 nn.ReLU(inplace=True), nn.Conv2d(in_channels // reduction, in_channels, 1),
                                 nn.Sigmoid())
        self.sSE = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.cSE(x) + x * self.sSE(x)


class Attention(nn.Module):
    def __init__(self, name, in_channels):
        super().__init__()
        self.attention = nn.Identity() if name is None else SCSEModule(in_channels)

    def forward(self, x):
        return self.attention(x)


class DecoderBlock(nn.Module):
    """Both decoders' block: `size` (Unet: the skip's size) or a fixed x2 (UnetPlusPlus)."""

    def __init__(self, in_channels, skip_channels, out_channels, use_norm, attention_type):
        super().__init__()
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels, use_norm)
        self.attention1 = Attention(attention_type, in_channels + skip_channels)
        self.conv2 = Conv2dReLU(out_channels, out_channels, use_norm)
        self.attention2 = Attention(attention_type, out_channels)

    def forward(self, x, skip=None, size=None):
        x = (F.interpolate(x, size=size, mode="nearest") if size is not None
             else F.interpolate(x, scale_factor=2.0, mode="nearest"))
        if skip is not None:
            x = self.attention1(torch.cat([x, skip], dim=1))
        return self.attention2(self.conv2(self.conv1(x)))


class UnetDecoder(nn.Module):
    def __init__(self, encoder_channels, decoder_channels, use_norm, attention_type):
        super().__init__()
        enc = encoder_channels[1:][::-1]
        ins = [enc[0]] + list(decoder_channels[:-1])
        skips = list(enc[1:]) + [0]
        self.center = nn.Identity()
        self.blocks = nn.ModuleList([DecoderBlock(i, s, o, use_norm, attention_type)
                                     for i, s, o in zip(ins, skips, decoder_channels)])

    def forward(self, features):
        shapes = [f.shape[2:] for f in features][::-1]
        features = features[1:][::-1]
        x = self.center(features[0])
        for i, block in enumerate(self.blocks):
            skip = features[i + 1] if i + 1 < len(features) else None
            x = block(x, skip, size=tuple(shapes[i + 1]))
        return x


class UnetPlusPlusDecoder(nn.Module):
    def __init__(self, encoder_channels, decoder_channels, use_norm, attention_type):
        super().__init__()
        enc = encoder_channels[1:][::-1]
        self.in_channels = [enc[0]] + list(decoder_channels[:-1])
        self.skip_channels = list(enc[1:]) + [0]
        self.out_channels = decoder_channels
        self.center = nn.Identity()
        blocks = {}
        for layer in range(len(self.in_channels) - 1):
            for depth in range(layer + 1):
                if depth == 0:
                    in_ch, skip_ch = self.in_channels[layer], self.skip_channels[layer] * (layer + 1)
                    out_ch = self.out_channels[layer]
                else:
                    out_ch = self.skip_channels[layer]
                    skip_ch = self.skip_channels[layer] * (layer + 1 - depth)
                    in_ch = self.skip_channels[layer - 1]
                blocks[f"x_{depth}_{layer}"] = DecoderBlock(in_ch, skip_ch, out_ch, use_norm, attention_type)
        blocks[f"x_0_{len(self.in_channels) - 1}"] = DecoderBlock(
            self.in_channels[-1], 0, self.out_channels[-1], use_norm, attention_type)
        self.blocks = nn.ModuleDict(blocks)
        self.depth = len(self.in_channels) - 1

    def forward(self, features):
        features = features[1:][::-1]
        dense = {}
        for layer in range(len(self.in_channels) - 1):
            for depth in range(self.depth - layer):
                if layer == 0:
                    dense[f"x_{depth}_{depth}"] = self.blocks[f"x_{depth}_{depth}"](
                        features[depth], features[depth + 1])
                else:
                    top = depth + layer
                    cat = torch.cat([dense[f"x_{i}_{top}"] for i in range(depth + 1, top + 1)]
                                    + [features[top + 1]], dim=1)
                    dense[f"x_{depth}_{top}"] = self.blocks[f"x_{depth}_{top}"](
                        dense[f"x_{depth}_{top - 1}"], cat)
        return self.blocks[f"x_0_{self.depth}"](dense[f"x_0_{self.depth - 1}"])


class _Model(nn.Module):
    decoder_cls = UnetDecoder

    def __init__(self, encoder_name="resnet34", encoder_depth=5, decoder_channels=(256, 128, 64, 32, 16),
                 decoder_use_norm="batchnorm", decoder_attention_type=None,
                 decoder_interpolation="nearest", in_channels=3, classes=1, decoder_use_batchnorm=None):
        super().__init__()
        self.encoder = ResNetEncoder(encoder_name, in_channels, encoder_depth)
        if decoder_use_batchnorm is not None:  # smp: the deprecated spelling, when given, wins
            decoder_use_norm = decoder_use_batchnorm
        use_norm = decoder_use_norm in ("batchnorm", True)
        self.decoder = self.decoder_cls(self.encoder.out_channels[:encoder_depth + 1], decoder_channels,
                                        use_norm, decoder_attention_type)
        self.segmentation_head = nn.Sequential(
            nn.Conv2d(decoder_channels[-1], classes, 3, padding=1), nn.Identity(), nn.Identity())

    def forward(self, x):
        return self.segmentation_head(self.decoder(self.encoder(x)))


class Unet(_Model):
    pass


class UnetPlusPlus(_Model):
    decoder_cls = UnetPlusPlusDecoder
