"""LeeJunHyun/Image_Segmentation network.py (read at 7a6e5f9): `U_Net`, `AttU_Net`, `R2U_Net`,
`R2AttU_Net` (conv_block, up_conv, Recurrent_block, RRCNN_block, Attention_block), with the
upstream attribute names and forward passes. Changed: `base_width` generalises the widths
64..1024; the four forwards share one loop."""

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


class Recurrent_block(nn.Module):
    def __init__(self, ch_out, t=2):
        super().__init__()
        self.t = t
        self.conv = nn.Sequential(
            nn.Conv2d(ch_out, ch_out, kernel_size=3, stride=1, padding=1, bias=True),
            nn.BatchNorm2d(ch_out), nn.ReLU(inplace=True))

    def forward(self, x):
        for i in range(self.t):
            if i == 0:
                x1 = self.conv(x)
            x1 = self.conv(x + x1)
        return x1


class RRCNN_block(nn.Module):
    def __init__(self, ch_in, ch_out, t=2):
        super().__init__()
        self.RCNN = nn.Sequential(Recurrent_block(ch_out, t=t), Recurrent_block(ch_out, t=t))
        self.Conv_1x1 = nn.Conv2d(ch_in, ch_out, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        x = self.Conv_1x1(x)
        return x + self.RCNN(x)


class Attention_block(nn.Module):
    def __init__(self, F_g, F_l, F_int):
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(F_g, F_int, kernel_size=1, stride=1, padding=0, bias=True),
                                 nn.BatchNorm2d(F_int))
        self.W_x = nn.Sequential(nn.Conv2d(F_l, F_int, kernel_size=1, stride=1, padding=0, bias=True),
                                 nn.BatchNorm2d(F_int))
        self.psi = nn.Sequential(nn.Conv2d(F_int, 1, kernel_size=1, stride=1, padding=0, bias=True),
                                 nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g, x):
        return x * self.psi(self.relu(self.W_g(g) + self.W_x(x)))


class _Net(nn.Module):
    recurrent = attention = False

    def __init__(self, img_ch=3, output_ch=1, base_width=64, t=2):
        super().__init__()
        w = [base_width * 2**i for i in range(5)]
        stage = (lambda i, o: RRCNN_block(i, o, t=t)) if self.recurrent else conv_block
        self.enc, self.dec = ("RRCNN", "Up_RRCNN") if self.recurrent else ("Conv", "Up_conv")
        self.Maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        for k, (cin, cout) in enumerate(zip((img_ch, *w[:4]), w), start=1):
            setattr(self, f"{self.enc}{k}", stage(cin, cout))
        for k in (5, 4, 3, 2):
            setattr(self, f"Up{k}", up_conv(w[k - 1], w[k - 2]))
            if self.attention:
                setattr(self, f"Att{k}", Attention_block(F_g=w[k - 2], F_l=w[k - 2], F_int=w[k - 2] // 2))
            setattr(self, f"{self.dec}{k}", stage(w[k - 1], w[k - 2]))
        self.Conv_1x1 = nn.Conv2d(w[0], output_ch, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        xs = [getattr(self, f"{self.enc}1")(x)]
        for k in (2, 3, 4, 5):
            xs.append(getattr(self, f"{self.enc}{k}")(self.Maxpool(xs[-1])))
        d = xs.pop()
        for k in (5, 4, 3, 2):
            d = getattr(self, f"Up{k}")(d)
            skip = xs.pop()
            if self.attention:
                skip = getattr(self, f"Att{k}")(g=d, x=skip)
            d = getattr(self, f"{self.dec}{k}")(torch.cat((skip, d), dim=1))
        return self.Conv_1x1(d)


class U_Net(_Net):
    def __init__(self, img_ch=3, output_ch=1, base_width=64):
        super().__init__(img_ch, output_ch, base_width)


class AttU_Net(_Net):
    attention = True

    def __init__(self, img_ch=3, output_ch=1, base_width=64):
        super().__init__(img_ch, output_ch, base_width)


class R2U_Net(_Net):
    recurrent = True


class R2AttU_Net(_Net):
    recurrent = attention = True
