"""Reading images and masks with Pillow, with errors that name the file; fitting them to a
size (resize, letterbox) as the upstreams do."""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

LETTERBOX_FILL = 128  # bubbliiiing's grey
IGNORE_INDEX = 255  # mask value excluded from losses and metrics


class ImageReadError(ValueError):
    """A file that is not a readable image."""


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e})") from e


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """uint8 (H, W, channels): RGB for 3 channels, luminance for 1 (Pillow's conversions)."""
    image = _open(Path(path))
    if channels not in (1, 3):
        raise ValueError(f"{path}: images can be read for models of 1 or 3 input channels, "
                         f"not {channels}")
    return np.asarray(image.convert("RGB" if channels == 3 else "L"), np.uint8).reshape(
        image.height, image.width, channels)


def read_mask(path: str | Path, binary: bool = False) -> np.ndarray:
    """uint8 (H, W) class ids: a palette PNG's indices, an L image's values, an RGB(A) image's
    first channel. `binary`: 0/255 (or 0/1) foreground masks, 255 read as class 1."""
    image = _open(Path(path))
    if image.mode in ("RGB", "RGBA"):
        mask = np.asarray(image)[..., 0]
    elif image.mode in ("P", "L", "1"):
        mask = np.asarray(image, np.uint8)
    elif image.mode in ("I", "I;16", "F"):
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 255:
            raise ValueError(f"{path}: mask values {values.min()}..{values.max()} do not fit "
                             "class ids 0..255")
        mask = values.astype(np.uint8)
    else:
        raise ValueError(f"{path}: masks must be palette, L or RGB images, not mode {image.mode}")
    mask = np.ascontiguousarray(mask, np.uint8)
    if binary:
        values = np.unique(mask)
        if not set(values.tolist()) <= {0, 1, 255}:
            raise ValueError(f"{path}: a binary mask must hold 0 and 255 (or 0 and 1), found "
                             f"{values[:8].tolist()}")
        mask = (mask > 0).astype(np.uint8)
    return mask


def resize(image: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    """(H, W[, C]) uint8 resized to size = (height, width) with a Pillow filter."""
    h, w = size
    squeeze = image.ndim == 3 and image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize((w, h), resample))
    return out[..., None] if squeeze else out


def letterbox_box(shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, new height, new width) of an image of `shape` scaled into `size`, keeping
    its aspect (bubbliiiing `resize_image`: int() of the scaled sides, centred)."""
    (ih, iw), (h, w) = shape, size
    scale = min(w / iw, h / ih)
    nw, nh = int(iw * scale), int(ih * scale)
    return (h - nh) // 2, (w - nw) // 2, nh, nw


def letterbox(image: np.ndarray, size: tuple[int, int], resample=Image.BICUBIC,
              fill: int = LETTERBOX_FILL) -> np.ndarray:
    """The image scaled into `size` keeping its aspect, centred on a `fill` background."""
    top, left, nh, nw = letterbox_box(image.shape[:2], size)
    out = np.full((*size, *image.shape[2:]), fill, image.dtype)
    out[top:top + nh, left:left + nw] = resize(image, (nh, nw), resample)
    return out


def fit(image: np.ndarray, mask: np.ndarray, size: tuple[int, int], how: str,
        mask_fill: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """A sample fitted to `size`: "resize" (bilinear / nearest) or "letterbox" (bicubic /
    nearest; the padding grey in the image, `mask_fill` in the mask)."""
    if image.shape[:2] == tuple(size):
        return image, mask
    if how == "letterbox":
        return letterbox(image, size), letterbox(mask, size, Image.NEAREST, mask_fill)
    return resize(image, size, Image.BILINEAR), resize(mask, size, Image.NEAREST)
