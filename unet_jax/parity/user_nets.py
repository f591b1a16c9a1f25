"""Hand-written torch U-Nets of the kind users bring, using the ops `import_torch` supports
in their less common forms (grouped and dilated convs, output_padding, ceil_mode pools,
count_include_pad, both align_corners, non-integer scales, reflect / replicate padding,
Group / Layer / Instance norms with and without running statistics, PReLU, pixel shuffle,
views and a linear over channels), in 1-D... 3-D. The importer's tests compare them with
torch; nothing in the library depends on them."""

import torch
from torch import nn
from torch.nn import functional as F


def _layers(dims: int):
    return (getattr(nn, f"Conv{dims}d"), getattr(nn, f"ConvTranspose{dims}d"),
            getattr(nn, f"BatchNorm{dims}d"), getattr(nn, f"InstanceNorm{dims}d"))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, dims: int, norm: str):
        super().__init__()
        conv, _, bn, inorm = _layers(dims)
        self.conv1 = conv(cin, cout, 3, padding=1, bias=norm == "group")
        self.norm1 = {"batch": lambda: bn(cout, momentum=None),
                      "instance": lambda: inorm(cout, affine=True, track_running_stats=True),
                      "group": lambda: nn.GroupNorm(2, cout, eps=1e-3)}[norm]()
        self.conv2 = conv(cout, cout, 3, padding=2, dilation=2, groups=2)
        self.norm2 = inorm(cout, affine=False) if norm != "batch" else bn(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x):
        x = F.leaky_relu(self.norm1(self.conv1(x)), 0.1, inplace=True)
        return self.act(self.norm2(self.conv2(x)))


class UserUNet(nn.Module):
    """A two-level U-Net in `dims` dimensions whose every layer takes an uncommon option."""

    def __init__(self, in_channels: int = 2, classes: int = 3, dims: int = 2, norm: str = "batch",
                 width: int = 8):
        super().__init__()
        conv, conv_t, _, _ = _layers(dims)
        self.dims = dims
        self.stem = nn.Sequential(conv(in_channels, width, 5, padding=2, padding_mode="reflect"),
                                  nn.ELU(0.7), nn.Hardswish())
        self.down1 = Block(width, 2 * width, dims, norm)
        self.down2 = Block(2 * width, 4 * width, dims, norm)
        self.up = conv_t(4 * width, 2 * width, 3, stride=2, padding=1, output_padding=1)
        self.mix = nn.Linear(4 * width, 2 * width)
        self.ln = nn.LayerNorm(2 * width, eps=1e-4)
        self.dec = Block(4 * width, width, dims, norm)
        self.drop = nn.Dropout(0.0)
        self.head = conv(width, classes, 1)

    def forward(self, x):
        pool = getattr(F, f"max_pool{self.dims}d")
        avg = getattr(F, f"avg_pool{self.dims}d")
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[self.dims]
        s = self.stem(x)
        d1 = self.down1(pool(s, 3, 2, padding=1, ceil_mode=True))
        d2 = self.down2(avg(d1, 3, 2, padding=1, ceil_mode=True, count_include_pad=False))
        u = F.gelu(self.up(d2), approximate="tanh")
        u = F.interpolate(u, size=d1.shape[2:], mode=mode, align_corners=False)
        both = torch.cat([u, d1], 1)
        # a linear and a LayerNorm over channels, through views as transformers do
        n, c = both.shape[:2]
        tokens = self.ln(self.mix(both.flatten(2).transpose(1, 2)))
        mixed = tokens.transpose(1, 2).reshape(n, -1, *both.shape[2:])
        g = getattr(F, f"adaptive_avg_pool{self.dims}d")(mixed, 1)
        both = torch.cat([mixed * torch.sigmoid(g), u + d1], 1)
        out = self.dec(self.drop(both))
        out = F.interpolate(out, scale_factor=2.0, mode=mode, align_corners=True)
        out = F.pad(out, [1] * (2 * self.dims), mode="replicate")
        out = avg(out, 3, 1)  # count_include_pad on no padding: the size back
        out = F.interpolate(out, size=x.shape[2:], mode="nearest")
        return {"logits": self.head(out), "aux": [torch.softmax(self.head(s), 1).mean((2,))]}


class ShuffleNet2d(nn.Module):
    """Sub-pixel upsampling, reflection padding, ReLU6 / SiLU / Hardsigmoid / Mish, a
    channel split and a stride-2 transposed conv with groups."""

    def __init__(self, in_channels: int = 1, classes: int = 2):
        super().__init__()
        self.down = nn.Conv2d(in_channels, 16, 4, stride=2, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.up_t = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=2)
        self.shuffle = nn.Sequential(nn.Conv2d(16, 4 * 8, 3, padding=1), nn.PixelShuffle(2))
        self.head = nn.Conv2d(16, classes, 3)

    def forward(self, x):
        a, b = torch.chunk(F.relu6(self.down(x)), 2, dim=1)
        a = F.silu(self.branch(a)) * F.hardsigmoid(b)
        up = torch.cat([self.up_t(a), F.mish(self.shuffle(torch.cat([a, b], 1)))[:, :8]], 1)
        up = F.pad(up, (1, 1, 1, 1), mode="reflect")
        return self.head(up)
