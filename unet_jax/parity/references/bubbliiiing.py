"""bubbliiiing/unet-pytorch `Unet` (nets/unet.py, nets/vgg.py, nets/resnet.py).
Changed: no `pretrained` download; `in_channels` is a parameter; two options reproduce
variants with identical keys: `nearest_upsampling` (the seed's copy uses
UpsamplingNearest2d) and `up_relu=False` (checkpoints from before upstream commit
34c97c5, 2021-08, had no ReLUs in unetUp)."""

import torch
import torch.nn as nn

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, in_channels=3):
        super().__init__()
        layers = []
        for v in VGG16_CFG:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_channels = v
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        feat1 = self.features[:4](x)
        feat2 = self.features[4:9](feat1)
        feat3 = self.features[9:16](feat2)
        feat4 = self.features[16:23](feat3)
        feat5 = self.features[23:-1](feat4)
        return [feat1, feat2, feat3, feat4, feat5]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


class ResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), in_channels=3):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        feat1 = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(feat1)
        feat2 = self.layer1(x)
        feat3 = self.layer2(feat2)
        feat4 = self.layer3(feat3)
        feat5 = self.layer4(feat4)
        return [feat1, feat2, feat3, feat4, feat5]


class unetUp(nn.Module):
    def __init__(self, in_size, out_size, nearest_upsampling=False, up_relu=True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_size, out_size, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(out_size, out_size, kernel_size=3, padding=1)
        self.up = (nn.UpsamplingNearest2d(scale_factor=2) if nearest_upsampling
                   else nn.UpsamplingBilinear2d(scale_factor=2))
        self.relu = nn.ReLU(inplace=True) if up_relu else nn.Identity()

    def forward(self, inputs1, inputs2):
        outputs = torch.cat([inputs1, self.up(inputs2)], 1)
        outputs = self.relu(self.conv1(outputs))
        return self.relu(self.conv2(outputs))


class Unet(nn.Module):
    def __init__(self, num_classes=21, backbone="vgg", in_channels=3, nearest_upsampling=False,
                 up_relu=True):
        super().__init__()
        if backbone == "vgg":
            self.vgg = VGG(in_channels)
            in_filters = [192, 384, 768, 1024]
        elif backbone == "resnet50":
            self.resnet = ResNet(in_channels=in_channels)
            in_filters = [192, 512, 1024, 3072]
        else:
            raise ValueError(f"Unsupported backbone - `{backbone}`, Use vgg, resnet50.")
        out_filters = [64, 128, 256, 512]
        opts = dict(nearest_upsampling=nearest_upsampling, up_relu=up_relu)
        self.up_concat4 = unetUp(in_filters[3], out_filters[3], **opts)
        self.up_concat3 = unetUp(in_filters[2], out_filters[2], **opts)
        self.up_concat2 = unetUp(in_filters[1], out_filters[1], **opts)
        self.up_concat1 = unetUp(in_filters[0], out_filters[0], **opts)
        if backbone == "resnet50":
            self.up_conv = nn.Sequential(
                nn.UpsamplingNearest2d(scale_factor=2) if nearest_upsampling
                else nn.UpsamplingBilinear2d(scale_factor=2),
                nn.Conv2d(out_filters[0], out_filters[0], kernel_size=3, padding=1), nn.ReLU(),
                nn.Conv2d(out_filters[0], out_filters[0], kernel_size=3, padding=1), nn.ReLU())
        else:
            self.up_conv = None
        self.final = nn.Conv2d(out_filters[0], num_classes, 1)
        self.backbone = backbone

    def forward(self, inputs):
        encoder = self.vgg if self.backbone == "vgg" else self.resnet
        feat1, feat2, feat3, feat4, feat5 = encoder.forward(inputs)
        up4 = self.up_concat4(feat4, feat5)
        up3 = self.up_concat3(feat3, up4)
        up2 = self.up_concat2(feat2, up3)
        up1 = self.up_concat1(feat1, up2)
        if self.up_conv is not None:
            up1 = self.up_conv(up1)
        return self.final(up1)

    def freeze_backbone(self):
        encoder = self.vgg if self.backbone == "vgg" else self.resnet
        for param in encoder.parameters():
            param.requires_grad = False

    def unfreeze_backbone(self):
        encoder = self.vgg if self.backbone == "vgg" else self.resnet
        for param in encoder.parameters():
            param.requires_grad = True
