"""Training augmentation: random horizontal flips and random scaled crops resized back,
the same transform for image and mask (bilinear / nearest), drawn from a NumPy generator so
a sample's augmentation is fixed by (seed, epoch, position) and resume stays exact."""

import numpy as np
from PIL import Image

SCALE = (0.5, 1.0)  # crop area as a fraction of the image
RATIO = (3 / 4, 4 / 3)  # crop aspect ratios (width / height)


def flip_and_scaled_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                         ) -> tuple[np.ndarray, np.ndarray]:
    """torchvision `RandomResizedCrop(size, SCALE, RATIO)` + `RandomHorizontalFlip()` on a
    uint8 (H, W, C) image and its (H, W) mask, keeping their size."""
    h, w = mask.shape
    area = rng.uniform(*SCALE) * h * w
    ratio = np.exp(rng.uniform(*np.log(RATIO)))
    ch = int(min(h, max(1, round(np.sqrt(area / ratio)))))
    cw = int(min(w, max(1, round(np.sqrt(area * ratio)))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    box = (left, top, left + cw, top + ch)
    channels = image.shape[-1]
    pil = Image.fromarray(image if channels > 1 else image[..., 0])
    image = np.asarray(pil.resize((w, h), Image.BILINEAR, box=box)).reshape(h, w, channels)
    mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST, box=box))
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
