"""ResNet-50 v1.5 (torchvision layout, stride on the 3x3) as used by bubbliiiing/unet-pytorch
nets/resnet.py: max-pool `MaxPool2d(3, 2, padding=0, ceil_mode=True)` (torchvision pads by
1 without ceil mode), five feature taps, no avgpool/fc."""

import jax
from flax import nnx

from unet_jax.convert.keymap import bn, conv
from unet_jax.nn import BatchNorm, Conv2d, max_pool3_s2_ceil

LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (planes, blocks, stride)
CHANNELS = (64, 256, 512, 1024, 2048)


class Downsample(nnx.Module):
    """`downsample = Sequential(Conv2d 1x1 stride, BatchNorm2d)`."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = Conv2d(in_ch, out_ch, 1, stride=stride, bias=False, rngs=rngs)
        self.bn = BatchNorm(out_ch)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class Bottleneck(nnx.Module):
    """torchvision `Bottleneck` (expansion 4): 1x1, 3x3 stride, 1x1, residual, ReLU."""

    def __init__(self, in_ch: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = Conv2d(in_ch, planes, 1, bias=False, rngs=rngs)
        self.bn1 = BatchNorm(planes)
        self.conv2 = Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn2 = BatchNorm(planes)
        self.conv3 = Conv2d(planes, planes * 4, 1, bias=False, rngs=rngs)
        self.bn3 = BatchNorm(planes * 4)
        needs_projection = stride != 1 or in_ch != planes * 4
        self.downsample = Downsample(in_ch, planes * 4, stride, rngs=rngs) if needs_projection else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return nnx.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nnx.Module):
    """Returns [feat1 (64 @ H/2), feat2 (256 @ H/4), feat3 (512 @ H/8), feat4 (1024 @ H/16),
    feat5 (2048 @ H/32)]."""

    def __init__(self, in_channels: int = 3, *, rngs: nnx.Rngs):
        self.conv1 = Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, rngs=rngs)
        self.bn1 = BatchNorm(64)
        in_ch = 64
        for n, (planes, blocks, stride) in enumerate(LAYERS, start=1):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(in_ch, planes, stride if b == 0 else 1, rngs=rngs))
                in_ch = planes * 4
            setattr(self, f"layer{n}", nnx.List(layer))

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        x = nnx.relu(self.bn1(self.conv1(x)))
        feats = [x]
        x = max_pool3_s2_ceil(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
            feats.append(x)
        return feats


def key_map(torch_prefix: str, flax_prefix: str):
    """torchvision resnet50 keys (less `fc.*`) under `torch_prefix`."""
    t, f = torch_prefix, flax_prefix
    block = "layer{n}.{b}"
    rules = conv(f"{t}conv1", f"{f}conv1", bias=False) + bn(f"{t}bn1", f"{f}bn1")
    for k in (1, 2, 3):
        rules += conv(f"{t}{block}.conv{k}", f"{f}{block}.conv{k}", bias=False)
        rules += bn(f"{t}{block}.bn{k}", f"{f}{block}.bn{k}")
    rules += conv(f"{t}{block}.downsample.0", f"{f}{block}.downsample.conv", bias=False)
    return rules + bn(f"{t}{block}.downsample.1", f"{f}{block}.downsample.bn")
