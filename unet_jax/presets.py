"""Preprocessing presets: each upstream's input, reproduced exactly.

A preset maps uint8 pixels to the model's input as `(x[..., order] / divide - mean) / std`
on the device, and says how an image of another size is fitted to the model ("letterbox",
"resize" or "pad"). A model records its preset (`unet_jax.models.recorded`): converted
models their upstream's, trained models the one they were trained with.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    upstream: str  # what it reproduces
    divide: float = 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False  # channels reversed before the mean is subtracted
    fit: str = "pad"  # letterbox | resize | pad: how predict fits other image sizes
    size: tuple[int, int] | None = None  # letterbox / resize target (None: the training size)

    @property
    def training_fit(self) -> str:
        """How training (and predict, for a trained model) fits images to the training size."""
        return "letterbox" if self.fit == "letterbox" else "resize"

    def normalize(self, images: jax.Array, dtype=jnp.float32) -> jax.Array:
        """uint8 (or float pixel-valued) NHWC images as model input in `dtype`."""
        x = images.astype(jnp.float32)
        channels = x.shape[-1]
        if self.bgr and channels == 3:
            x = x[..., ::-1]
        mean, std = (np.asarray(v, np.float32) for v in (self.mean, self.std))
        if channels != 3:  # grayscale / extra channels: the channel-averaged statistics
            mean, std = np.full(channels, mean.mean(), np.float32), np.full(channels, std.mean(), np.float32)
        return ((x / np.float32(self.divide) - mean) / std).astype(dtype)


PRESETS = {p.name: p for p in (
    Preset("bubbliiiing", "bubbliiiing/unet-pytorch: RGB, letterbox (bicubic) onto grey 128 "
           "at 512x512, /255", fit="letterbox", size=(512, 512)),
    Preset("semseg", "pytorch-semseg test.py: BGR, minus [104.00699, 116.66877, 122.67892], "
           "then /255; resized to the input size", divide=1.0,
           mean=(104.00699, 116.66877, 122.67892), std=(255.0, 255.0, 255.0), bgr=True,
           fit="resize"),
    Preset("imgseg", "LeeJunHyun/Image_Segmentation: ToTensor + Normalize(0.5, 0.5)",
           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    Preset("imagenet", "torchvision / albumentations Normalize(): ImageNet mean and std",
           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    Preset("unit", "/255 (torchvision ToTensor)"),
    Preset("none", "raw 0..255 pixel values", divide=1.0),
)}


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def describe() -> str:
    return "; ".join(f"{p.name}: {p.upstream}" for p in PRESETS.values())
