"""Torch reference of milesial/Pytorch-UNet `UNet(n_channels, n_classes, bilinear=False)`.

Upstream: github.com/milesial/Pytorch-UNet, unet/unet_parts.py (DoubleConv, Down, Up,
OutConv) and unet/unet_model.py (UNet) at commit 21d7850, followed class by class with the
upstream attribute names, so `state_dict()` has the upstream keys.
Changed: `base_width` (upstream 64) generalises the widths 64..1024; `conv_bias=True` gives
the v1.0 / v2.0 layout (before 514f18e "delete convolution bias before BN", Dec 2021, the two
3x3 convs of every DoubleConv had biases: 18 more keys; v1.0 / v2.0 also defaulted to
bilinear=True, the weights have the same shapes either way); upstream's `use_checkpointing`,
docstrings and the stored `n_channels` / `n_classes` / `bilinear` attributes are left out.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class DoubleConv(nn.Module):
    """conv3x3 (pad 1) -> BN -> ReLU -> conv3x3 (pad 1) -> BN -> ReLU; mid defaults to out."""

    def __init__(self, in_channels, out_channels, mid_channels=None, conv_bias=False):
        super().__init__()
        mid = mid_channels if mid_channels else out_channels  # upstream: `if not mid_channels`
        self.double_conv = nn.Sequential(  # indices 0, 1, 3, 4 hold weights
            nn.Conv2d(in_channels, mid, kernel_size=3, padding=1, bias=conv_bias),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, kernel_size=3, padding=1, bias=conv_bias),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.double_conv(x)


class Down(nn.Module):
    """MaxPool2d(2), then DoubleConv (keys `maxpool_conv.1.double_conv.*`)."""

    def __init__(self, in_channels, out_channels, conv_bias=False):
        super().__init__()
        self.maxpool_conv = nn.Sequential(
            nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, conv_bias=conv_bias))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Upsample x1, pad it to x2's size, cat [x2, x1] on channels, DoubleConv.

    bilinear: parameter-free align-corners x2 and a DoubleConv whose middle width is
    in_channels // 2; otherwise ConvTranspose2d(in, in // 2, 2, stride 2, with bias) and a
    plain DoubleConv.
    """

    def __init__(self, in_channels, out_channels, bilinear=True, conv_bias=False):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2, conv_bias)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels, conv_bias=conv_bias)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy = x2.size(2) - x1.size(2)  # NCHW: rows
        dx = x2.size(3) - x1.size(3)
        # F.pad's list runs from the last dim: (left, right, top, bottom); an odd
        # difference puts the extra row / column at the bottom / right
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    """1x1 conv with bias (kept at every version)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    """inc, down1..4, up1..4, outc; with bilinear, `factor` 2 halves down4's and up1..3's
    outputs (up4 always gives base_width)."""

    def __init__(self, n_channels, n_classes, bilinear=False, base_width=64, conv_bias=False):
        super().__init__()
        c1, c2, c3, c4, c5 = (base_width * 2**i for i in range(5))  # 64 .. 1024 upstream
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(n_channels, c1, conv_bias=conv_bias)
        self.down1 = Down(c1, c2, conv_bias)
        self.down2 = Down(c2, c3, conv_bias)
        self.down3 = Down(c3, c4, conv_bias)
        self.down4 = Down(c4, c5 // factor, conv_bias)
        self.up1 = Up(c5, c4 // factor, bilinear, conv_bias)
        self.up2 = Up(c4, c3 // factor, bilinear, conv_bias)
        self.up3 = Up(c3, c2 // factor, bilinear, conv_bias)
        self.up4 = Up(c2, c1, bilinear, conv_bias)
        self.outc = OutConv(c1, n_classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)
