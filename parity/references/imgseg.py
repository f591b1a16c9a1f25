"""LeeJunHyun/Image_Segmentation network.py `U_Net` (conv_block, up_conv). Changed:
`base_width` generalises the widths 64..1024."""

import torch
import torch.nn as nn


class conv_block(nn.Module):
    def __init__(self, ch_in, ch_out):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch_in, ch_out, kernel_size=3, stride=1, padding=1, bias=True),
            nn.BatchNorm2d(ch_out), nn.ReLU(inplace=True),
            nn.Conv2d(ch_out, ch_out, kernel_size=3, stride=1, padding=1, bias=True),
            nn.BatchNorm2d(ch_out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class up_conv(nn.Module):
    def __init__(self, ch_in, ch_out):
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ch_in, ch_out, kernel_size=3, stride=1, padding=1, bias=True),
            nn.BatchNorm2d(ch_out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.up(x)


class U_Net(nn.Module):
    def __init__(self, img_ch=3, output_ch=1, base_width=64):
        super().__init__()
        w = [base_width * 2**i for i in range(5)]
        self.Maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.Conv1 = conv_block(ch_in=img_ch, ch_out=w[0])
        self.Conv2 = conv_block(ch_in=w[0], ch_out=w[1])
        self.Conv3 = conv_block(ch_in=w[1], ch_out=w[2])
        self.Conv4 = conv_block(ch_in=w[2], ch_out=w[3])
        self.Conv5 = conv_block(ch_in=w[3], ch_out=w[4])
        self.Up5 = up_conv(ch_in=w[4], ch_out=w[3])
        self.Up_conv5 = conv_block(ch_in=w[4], ch_out=w[3])
        self.Up4 = up_conv(ch_in=w[3], ch_out=w[2])
        self.Up_conv4 = conv_block(ch_in=w[3], ch_out=w[2])
        self.Up3 = up_conv(ch_in=w[2], ch_out=w[1])
        self.Up_conv3 = conv_block(ch_in=w[2], ch_out=w[1])
        self.Up2 = up_conv(ch_in=w[1], ch_out=w[0])
        self.Up_conv2 = conv_block(ch_in=w[1], ch_out=w[0])
        self.Conv_1x1 = nn.Conv2d(w[0], output_ch, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        x1 = self.Conv1(x)
        x2 = self.Conv2(self.Maxpool(x1))
        x3 = self.Conv3(self.Maxpool(x2))
        x4 = self.Conv4(self.Maxpool(x3))
        x5 = self.Conv5(self.Maxpool(x4))
        d5 = self.Up_conv5(torch.cat((x4, self.Up5(x5)), dim=1))
        d4 = self.Up_conv4(torch.cat((x3, self.Up4(d5)), dim=1))
        d3 = self.Up_conv3(torch.cat((x2, self.Up3(d4)), dim=1))
        d2 = self.Up_conv2(torch.cat((x1, self.Up2(d3)), dim=1))
        return self.Conv_1x1(d2)
