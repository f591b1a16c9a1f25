"""Segmentation data: a `Dataset` interface, the embedded procedural "shapes" set, image/mask
folders, and tensorflow-datasets; batched deterministically with grain.

A sample is `(image float32 HxWxC in [0, 1], mask uint8 HxW of class ids)`; 255 marks
pixels to ignore. Batches of epoch `e` are a grain `MapDataset` shuffled with seed
`seed + e`, so any (epoch, step) is addressable: resuming needs only the step counter.
"""

import colorsys
import dataclasses
import functools
from pathlib import Path
from typing import Protocol

import grain
import numpy as np

IGNORE_INDEX = 255


class Dataset(Protocol):
    """Random-access segmentation samples. Implement these three to plug in a new source."""

    num_classes: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Procedural shapes: a noisy textured background with circles, rectangles and
    triangles; class k > 0 has its own shape and colour, both jittered. Deterministic in
    (seed, index), any size, any number of classes >= 2, learnable in minutes."""

    size: int = 64  # number of samples
    height: int = 64
    width: int = 64
    num_classes: int = 4  # including background 0
    seed: int = 0
    channels: int = 3

    def __len__(self) -> int:
        return self.size

    def _palette(self) -> np.ndarray:
        """A grey background and evenly spaced hues for the classes."""
        hues = [colorsys.hsv_to_rgb(k / (self.num_classes - 1), 0.75, 0.9)
                for k in range(self.num_classes - 1)]
        rgb = np.array([(0.45, 0.45, 0.45), *hues])
        return np.resize(rgb, (self.num_classes, self.channels)) if self.channels != 3 else rgb

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        rng = np.random.default_rng([self.seed, index])
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        palette = self._palette()
        image = palette[0] * (0.7 + 0.3 * np.sin(xx / rng.uniform(3, 9))[..., None])
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 4)):
            cls = int(rng.integers(1, self.num_classes))
            cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
            r = rng.uniform(0.1, 0.25) * min(h, w)
            kind = cls % 3
            if kind == 0:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            elif kind == 1:
                inside = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r)
            else:
                inside = (yy - cy + r >= 0) & (np.abs(xx - cx) <= (yy - cy + r) / 2)
                inside &= yy <= cy + r
            mask[inside] = cls
            image[inside] = palette[cls] * rng.uniform(0.8, 1.2)
        image = image + rng.normal(0, 0.08, image.shape)
        return np.clip(image, 0, 1).astype(np.float32), mask


@dataclasses.dataclass(frozen=True)
class ImageFolders:
    """`images/` and `masks/` folders of same-named files (masks: class ids, 255 ignored),
    read with Pillow and resized to (height, width) (bilinear for images, nearest masks)."""

    root: str
    num_classes: int
    height: int = 256
    width: int = 256

    @functools.cached_property
    def pairs(self) -> list[tuple[Path, Path]]:
        """(image, mask) paths, matched by file stem."""
        images = self._files("images")
        masks = {p.stem: p for p in self._files("masks")}
        unmatched = [p.name for p in images if p.stem not in masks]
        if not images or unmatched:
            raise ValueError(f"{self.root}: need images/ and masks/ with matching file names; "
                             f"{len(images)} images, without a mask: {unmatched[:5]}")
        return [(p, masks[p.stem]) for p in images]

    def _files(self, sub: str) -> list[Path]:
        folder = Path(self.root) / sub
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found (expected {self.root}/images and /masks)")
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image
        image_path, mask_path = self.pairs[index]
        size = (self.width, self.height)
        image = Image.open(image_path).convert("RGB").resize(size, Image.BILINEAR)
        mask = Image.open(mask_path).resize(size, Image.NEAREST)
        return np.asarray(image, np.float32) / 255.0, np.asarray(mask, np.uint8)


@dataclasses.dataclass(frozen=True)
class TFDS:
    """A tensorflow-datasets split with `image` and `segmentation_mask` features
    (e.g. oxford_iiit_pet: masks 1..3 become 0..2 with `label_offset=-1`)."""

    name: str
    split: str
    num_classes: int
    height: int = 128
    width: int = 128
    label_offset: int = 0

    @functools.cached_property
    def source(self):
        try:
            import tensorflow_datasets as tfds
        except ImportError as e:
            raise ImportError("the tfds source needs tensorflow-datasets: "
                              "pip install tensorflow-datasets (or the tfds extra)") from e
        return tfds.data_source(self.name, split=self.split)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image
        item = self.source[index]
        size = (self.width, self.height)
        image = Image.fromarray(item["image"]).convert("RGB").resize(size, Image.BILINEAR)
        mask = Image.fromarray(item["segmentation_mask"][..., 0]).resize(size, Image.NEAREST)
        mask = np.asarray(mask, np.int64) + self.label_offset
        return np.asarray(image, np.float32) / 255.0, mask.astype(np.uint8)


def batches(dataset: Dataset, batch_size: int, *, epoch: int, seed: int,
            shuffle: bool = True) -> grain.MapDataset:
    """Epoch `epoch`'s batches as a random-access grain dataset of
    `{"image": (B,H,W,C), "mask": (B,H,W)}`; the last partial batch is dropped."""
    if len(dataset) < batch_size:
        raise ValueError(f"the dataset has {len(dataset)} samples, fewer than one batch "
                         f"of {batch_size}")
    ds = grain.MapDataset.source(dataset)
    if shuffle:
        ds = ds.shuffle(seed=seed + epoch)
    ds = ds.map(lambda s: {"image": s[0], "mask": s[1]})
    return ds.batch(batch_size, drop_remainder=True)
