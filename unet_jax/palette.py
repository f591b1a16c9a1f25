"""Colours for class-id masks: the Pascal VOC palette up to 21 classes, evenly spaced hues
beyond (as bubbliiiing); palette PNGs and bubbliiiing's overlays (`mix_type` 0, 1, 2)."""

import colorsys

import numpy as np
from PIL import Image

MIX_TYPES = {0: "the colours blended over the image (0.7)", 1: "the colours only",
             2: "the image where the class is not background"}


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: the VOC colour map (class k's bits spread over R, G, B, high bit first)."""
    colours = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, value = k, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                value[channel] |= ((c >> channel) & 1) << shift
            c >>= 3
        colours[k] = value
    return colours


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours."""
    if num_classes <= 21:
        return voc_palette(num_classes)
    hues = [colorsys.hsv_to_rgb(k / num_classes, 1.0, 1.0) for k in range(num_classes)]
    return (np.array(hues) * 255).astype(np.uint8)


def mask_image(mask: np.ndarray, num_classes: int) -> Image.Image:
    """A palette ("P") PNG image of class ids: the pixel values are the ids."""
    image = Image.fromarray(mask.astype(np.uint8), "P")
    colours = np.zeros((256, 3), np.uint8)
    colours[:num_classes] = palette(num_classes)
    image.putpalette(colours.ravel().tolist())
    return image


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, mix_type: int = 0) -> Image.Image:
    """bubbliiiing `detect_image`'s picture of `mask` on the uint8 RGB `image`."""
    if mix_type not in MIX_TYPES:
        raise ValueError(f"mix_type must be one of {sorted(MIX_TYPES)}, got {mix_type}")
    rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, -1)
    colours = palette(num_classes)[mask]
    if mix_type == 0:
        return Image.blend(Image.fromarray(rgb), Image.fromarray(colours), 0.7)
    if mix_type == 1:
        return Image.fromarray(colours)
    return Image.fromarray((rgb * (mask != 0)[..., None]).astype(np.uint8))


def values_image(mask: np.ndarray, values: list) -> Image.Image:
    """Class ids -> the mask pixel values the model was trained on (milesial's
    `mask_to_image`): [0, 1] a 1-bit image, grey levels an L image, colours (lists) RGB."""
    if values and isinstance(values[0], list | tuple):
        out = np.zeros((*mask.shape, len(values[0])), np.uint8)
    else:
        out = np.zeros(mask.shape, bool if list(values) == [0, 1] else np.uint8)
    for i, value in enumerate(values):
        out[mask == i] = value
    return Image.fromarray(out)
