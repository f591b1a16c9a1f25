"""torchvision VGG16 `features` (cfg D, no BatchNorm), as used by bubbliiiing/unet-pytorch
nets/vgg.py: five feature taps, the last max-pool never run."""

import jax
from flax import nnx

from unet_jax.models.keymap import conv
from unet_jax.nn import Conv2d, max_pool2

# (index in `features`, in, out) of the 13 convs; the max-pools sit at 4, 9, 16, 23, 30.
CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256),
         (12, 256, 256), (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512),
         (24, 512, 512), (26, 512, 512), (28, 512, 512))
POOLS = (4, 9, 16, 23)  # a tap is taken before each of these and at the end
CHANNELS = (64, 128, 256, 512, 512)


class VGG16(nnx.Module):
    """`VGG16.features` returning [feat1 (H), feat2 (H/2), feat3 (H/4), feat4 (H/8),
    feat5 (H/16)]."""

    def __init__(self, in_channels: int = 3, *, rngs: nnx.Rngs):
        self.features = nnx.Dict({
            str(i): Conv2d(in_channels if i == 0 else cin, cout, 3, padding=1, rngs=rngs)
            for i, cin, cout in CONVS})

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps = []
        for i, _, _ in CONVS:
            if i - 1 in POOLS:
                taps.append(x)
                x = max_pool2(x)
            x = nnx.relu(self.features[str(i)](x))
        return taps + [x]


def key_map(torch_prefix: str, flax_prefix: str):
    """torchvision's `features.{n}` keys under `torch_prefix`."""
    return conv(f"{torch_prefix}features.{{n}}", f"{flax_prefix}features.{{n}}")
