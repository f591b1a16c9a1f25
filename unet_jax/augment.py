"""Training augmentation, named by one string: ops joined by "+", or a preset.

Ops (image bilinear / bicubic, mask nearest; all keep the training size):
  scale(a,b)     zoom by a factor drawn log-uniformly from [a, b]
  jitter(j)      aspect ratio times rand(1-j, 1+j) / rand(1-j, 1+j) (bubbliiiing)
  crop           back to the training size at a random position (padding: grey image,
                 ignored mask); without it, zoomed samples are centre-cropped / padded
  resized_crop   torchvision RandomResizedCrop(scale=(0.5, 1), ratio=(3/4, 4/3))
  hflip, vflip   flips with probability 0.5
  hsv(h,s,v)     bubbliiiing's colour jitter: hue, saturation and value scaled by 1 + U(-x, x)
Presets: PRESETS below. Every random draw comes from the generator passed in, seeded per
sample by (seed, epoch, position), so a sample's augmentation is fixed and resume is exact.
Written with numpy and Pillow rather than albumentations (see README, Augmentation).
"""

import re

import numpy as np
from PIL import Image

from unet_jax.imageio import LETTERBOX_FILL

IGNORE = 255
PRESETS = {
    "basic": "resized_crop+hflip",  # what `--augment` alone meant before the op strings
    "standard": "scale(0.5,2)+crop+hflip",
    "bubbliiiing": "jitter(0.3)+scale(0.25,2)+crop+hflip+hsv(0.1,0.7,0.3)",
    "flips": "hflip+vflip",
}
DEFAULTS = {"scale": (0.5, 2.0), "jitter": (0.3,), "hsv": (0.1, 0.7, 0.3)}
OPS = ("scale", "jitter", "crop", "resized_crop", "hflip", "vflip", "hsv")
_OP = re.compile(r"^([a-z_]+)(?:\(([^()]*)\))?$")


def parse(spec: str) -> list[tuple[str, tuple[float, ...]]]:
    """[(op, arguments)] of an augmentation string (a preset name, ops joined by "+",
    "" / "none" / "false" for none, "true" for "basic"). Raises ValueError naming the bad op."""
    spec = {"true": "basic", "false": "", "none": ""}.get(str(spec).strip().lower(), str(spec))
    spec = PRESETS.get(spec.strip(), spec.strip())
    ops = []
    for part in filter(None, (p.strip() for p in spec.replace(" ", "").split("+"))):
        match = _OP.match(part)
        if not match or match[1] not in OPS:
            raise ValueError(f"unknown augmentation {part!r}; ops: {', '.join(OPS)}; "
                             f"presets: {', '.join(PRESETS)}")
        name, args = match[1], match[2]
        try:
            values = tuple(float(a) for a in args.split(",")) if args else DEFAULTS.get(name, ())
        except ValueError:
            raise ValueError(f"augmentation {part!r}: arguments must be numbers") from None
        expected = len(DEFAULTS.get(name, ()))
        if len(values) != expected:
            raise ValueError(f"augmentation {name} takes {expected} argument(s), got {part!r}")
        if name == "scale" and not 0 < values[0] <= values[1]:
            raise ValueError(f"augmentation {part!r}: need 0 < a <= b")
        ops.append((name, values))
    return ops


def _resize(image: np.ndarray, mask: np.ndarray, h: int, w: int, box=None):
    channels = image.shape[-1]
    pil = Image.fromarray(image if channels > 1 else image[..., 0])
    image = np.asarray(pil.resize((w, h), Image.BICUBIC, box=box)).reshape(h, w, channels)
    return image, np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST, box=box))


def _place(image, mask, size, rng):
    """Crop or pad (image grey, mask ignored) to `size`; random offsets with `rng`, else centred."""
    (h, w), (th, tw) = mask.shape, size
    out_i = np.full((th, tw, image.shape[-1]), LETTERBOX_FILL, np.uint8)
    out_m = np.full((th, tw), IGNORE, np.uint8)

    def offsets(n, t):  # (source start, target start, length)
        shift = int(rng.integers(0, abs(n - t) + 1)) if rng is not None else abs(n - t) // 2
        return (shift, 0, t) if n >= t else (0, shift, n)

    (sy, ty, ly), (sx, tx, lx) = offsets(h, th), offsets(w, tw)
    out_i[ty:ty + ly, tx:tx + lx] = image[sy:sy + ly, sx:sx + lx]
    out_m[ty:ty + ly, tx:tx + lx] = mask[sy:sy + ly, sx:sx + lx]
    return out_i, out_m


def _resized_crop(image, mask, rng, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
    h, w = mask.shape
    area = rng.uniform(*scale) * h * w
    aspect = np.exp(rng.uniform(*np.log(ratio)))
    ch = int(min(h, max(1, round(np.sqrt(area / aspect)))))
    cw = int(min(w, max(1, round(np.sqrt(area * aspect)))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return _resize(image, mask, h, w, box=(left, top, left + cw, top + ch))


def _hsv(image, rng, gains):
    """bubbliiiing's HSV lookup tables (Pillow's HSV: hue in 0..255 wraps around)."""
    if image.shape[-1] != 3:
        return image
    r = rng.uniform(-1, 1, 3) * np.asarray(gains) + 1
    x = np.arange(256, dtype=np.float64)
    luts = [((x * r[0]) % 256).astype(np.uint8), np.clip(x * r[1], 0, 255).astype(np.uint8),
            np.clip(x * r[2], 0, 255).astype(np.uint8)]
    hsv = np.asarray(Image.fromarray(image).convert("HSV"))
    hsv = np.stack([lut[hsv[..., c]] for c, lut in enumerate(luts)], -1)
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def apply(ops, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """`ops` (from `parse`) applied to a uint8 (H, W, C) image and its (H, W) mask; the
    result has their size."""
    size = mask.shape
    zoom_y = zoom_x = 1.0
    for name, args in ops:
        if name == "jitter":
            j = args[0]
            aspect = rng.uniform(1 - j, 1 + j) / rng.uniform(1 - j, 1 + j)
            zoom_x, zoom_y = zoom_x * np.sqrt(aspect), zoom_y / np.sqrt(aspect)
        elif name == "scale":
            s = float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
            zoom_y, zoom_x = zoom_y * s, zoom_x * s
        elif name == "crop":
            image, mask = _zoom(image, mask, size, zoom_y, zoom_x)
            zoom_y = zoom_x = 1.0
            image, mask = _place(image, mask, size, rng)
        elif name == "resized_crop":
            image, mask = _resized_crop(image, mask, rng)
        elif name in ("hflip", "vflip") and rng.random() < 0.5:
            axis = 1 if name == "hflip" else 0
            image, mask = np.flip(image, axis), np.flip(mask, axis)
        elif name == "hsv":
            image = _hsv(np.ascontiguousarray(image), rng, args)
    image, mask = _zoom(image, mask, size, zoom_y, zoom_x)
    if mask.shape != size:
        image, mask = _place(image, mask, size, None)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def _zoom(image, mask, size, zoom_y, zoom_x):
    if zoom_y == zoom_x == 1.0:
        return image, mask
    h, w = (max(1, round(n * z)) for n, z in zip(size, (zoom_y, zoom_x)))
    return _resize(image, mask, h, w)


def pipeline(spec: str):
    """`augment(image, mask, rng)` for `spec`, or None when it names no op."""
    ops = parse(spec)
    if not ops:
        return None

    def augment(image, mask, rng):
        return apply(ops, image, mask, rng)

    return augment
