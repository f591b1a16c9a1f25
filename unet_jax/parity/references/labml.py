"""labml.ai `UNet`: labmlai/annotated_deep_learning_paper_implementations
labml_nn/unet/__init__.py. Changed: torchvision's `center_crop` is written out (same
`int(round((H - h) / 2))` offsets) so torchvision is not needed; `base_width` generalises
the widths 64..1024; `seed_spelling=True` names the bottleneck `middel_conv` as the seed's
copy does (its `DoubleConvolution(i, 0)` typo is fixed to `(i, o)`)."""

import torch
import torch.nn as nn


def center_crop(x, size):
    """torchvision.transforms.functional.center_crop for a crop no larger than `x`."""
    h, w = size
    top = int(round((x.shape[2] - h) / 2.0))
    left = int(round((x.shape[3] - w) / 2.0))
    return x[:, :, top:top + h, left:left + w]


class DoubleConvolution(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.first = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.act1 = nn.ReLU()
        self.second = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x):
        return self.act2(self.second(self.act1(self.first(x))))


class DownSample(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(x)


class UpSample(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x):
        return self.up(x)


class CropAndConcat(nn.Module):
    def forward(self, x, contracting_x):
        contracting_x = center_crop(contracting_x, [x.shape[2], x.shape[3]])
        return torch.cat([x, contracting_x], dim=1)


class UNet(nn.Module):
    def __init__(self, in_channels=3, out_channels=1, base_width=64, seed_spelling=False):
        super().__init__()
        w = [base_width * 2**i for i in range(5)]
        self.down_conv = nn.ModuleList([DoubleConvolution(i, o) for i, o in
                                        [(in_channels, w[0]), (w[0], w[1]), (w[1], w[2]),
                                         (w[2], w[3])]])
        self.down_sample = nn.ModuleList([DownSample() for _ in range(4)])
        middle = DoubleConvolution(w[3], w[4])
        self.middle_name = "middel_conv" if seed_spelling else "middle_conv"
        setattr(self, self.middle_name, middle)
        self.up_sample = nn.ModuleList([UpSample(i, o) for i, o in
                                        [(w[4], w[3]), (w[3], w[2]), (w[2], w[1]), (w[1], w[0])]])
        self.up_conv = nn.ModuleList([DoubleConvolution(i, o) for i, o in
                                      [(w[4], w[3]), (w[3], w[2]), (w[2], w[1]), (w[1], w[0])]])
        self.concat = nn.ModuleList([CropAndConcat() for _ in range(4)])
        self.final_conv = nn.Conv2d(w[0], out_channels, kernel_size=1)

    def forward(self, x):
        pass_through = []
        for i in range(len(self.down_conv)):
            x = self.down_conv[i](x)
            pass_through.append(x)
            x = self.down_sample[i](x)
        x = getattr(self, self.middle_name)(x)
        for i in range(len(self.up_conv)):
            x = self.up_sample[i](x)
            x = self.concat[i](x, pass_through.pop())
            x = self.up_conv[i](x)
        return self.final_conv(x)
