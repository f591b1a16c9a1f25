"""torchvision's ResNet layout (v1.5: stride on the 3x3), no avgpool / fc, five feature taps:
`ResNet50` as bubbliiiing/unet-pytorch nets/resnet.py builds it (max-pool
`MaxPool2d(3, 2, padding=0, ceil_mode=True)`), and `ResNet` with torchvision's own stem
pool (`MaxPool2d(3, 2, padding=1)`) for smp's resnet18 / 34 / 50 encoders."""

import jax
from flax import nnx

from unet_jax.models.keymap import bn, conv
from unet_jax.nn import BatchNorm, Conv2d, max_pool3_s2_ceil, max_pool3_s2_pad1

PLANES = (64, 128, 256, 512)
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}


class Downsample(nnx.Module):
    """`downsample = Sequential(Conv2d 1x1 stride, BatchNorm2d)`."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = Conv2d(in_ch, out_ch, 1, stride=stride, bias=False, rngs=rngs)
        self.bn = BatchNorm(out_ch)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
    """torchvision `BasicBlock` (expansion 1): 3x3 stride, 3x3, residual, ReLU."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn1 = BatchNorm(planes)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = BatchNorm(planes)
        needs_projection = stride != 1 or in_ch != planes
        self.downsample = Downsample(in_ch, planes, stride, rngs=rngs) if needs_projection else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nnx.Module):
    """torchvision `Bottleneck` (expansion 4): 1x1, 3x3 stride, 1x1, residual, ReLU."""

    expansion = 4

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


def block_of(name: str) -> type:
    return Bottleneck if name == "resnet50" else BasicBlock


def channels(name: str) -> tuple[int, ...]:
    """Channels of the five taps (stem, layer1..layer4)."""
    return (64, *(p * block_of(name).expansion for p in PLANES))


class ResNet(nnx.Module):
    """`name` ("resnet18" | "resnet34" | "resnet50") with `depth` stages (1..5: the stem, then
    layer1..layer4); returns the taps [stem (H/2), layer1 (H/4), ..., layer4 (H/32)] up to
    `depth`. Later layers are built even when unused (smp keeps `layer4` at depth 4)."""

    def __init__(self, name: str = "resnet50", in_channels: int = 3, *, depth: int = 5,
                 ceil_pool: bool = False, rngs: nnx.Rngs):
        self.conv1 = Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, rngs=rngs)
        self.bn1 = BatchNorm(64)
        self.depth, self.ceil_pool = depth, ceil_pool
        block, in_ch = block_of(name), 64
        for n, (planes, blocks) in enumerate(zip(PLANES, BLOCKS[name]), start=1):
            layer = []
            for b in range(blocks):
                layer.append(block(in_ch, planes, 2 if b == 0 and n > 1 else 1, rngs=rngs))
                in_ch = planes * block.expansion
            setattr(self, f"layer{n}", nnx.List(layer))

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        x = nnx.relu(self.bn1(self.conv1(x)))
        feats = [x]
        x = max_pool3_s2_ceil(x) if self.ceil_pool else max_pool3_s2_pad1(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[:self.depth - 1]:
            for block in layer:
                x = block(x)
            feats.append(x)
        return feats


def ResNet50(in_channels: int = 3, *, rngs: nnx.Rngs) -> ResNet:  # noqa: N802 (a layout's name)
    """bubbliiiing's ResNet-50: [feat1 (64 @ H/2), feat2 (256 @ H/4), ..., feat5 (2048 @ H/32)]."""
    return ResNet("resnet50", in_channels, ceil_pool=True, rngs=rngs)


def key_map(torch_prefix: str, flax_prefix: str, name: str = "resnet50"):
    """torchvision resnet keys (less `fc.*`) under `torch_prefix`."""
    t, f = torch_prefix, flax_prefix
    block = "layer{n}.{b}"
    rules = conv(f"{t}conv1", f"{f}conv1", bias=False) + bn(f"{t}bn1", f"{f}bn1")
    for k in (1, 2, 3) if block_of(name) is Bottleneck else (1, 2):
        rules += conv(f"{t}{block}.conv{k}", f"{f}{block}.conv{k}", bias=False)
        rules += bn(f"{t}{block}.bn{k}", f"{f}{block}.bn{k}")
    rules += conv(f"{t}{block}.downsample.0", f"{f}{block}.downsample.conv", bias=False)
    return rules + bn(f"{t}{block}.downsample.1", f"{f}{block}.downsample.bn")
