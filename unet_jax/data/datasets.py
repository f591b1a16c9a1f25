"""Segmentation datasets: a `Dataset` interface, the embedded procedural "shapes" set,
image/mask files in the upstreams' layouts (`unet_jax.data.layouts`), and
tensorflow-datasets; batched by `unet_jax.data.pipeline`.

A sample is `(image uint8 HxWxC, mask uint8 HxW of class ids)`; `IGNORE_INDEX` marks pixels
to ignore. Images travel to the devices as uint8 and are normalised there
(`unet_jax.presets`).
"""

import colorsys
import concurrent.futures
import dataclasses
import functools
import logging
import threading
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from unet_jax.data import imageio
from unet_jax.data.imageio import IGNORE_INDEX

COMMAND_LINE = False  # messages name options as flags (`--out-of-range ignore`); the CLI sets it


def option(name: str, value) -> str:
    """An option as the user spells it: `--out-of-range ignore` from the command line,
    `out_of_range="ignore"` from Python."""
    if COMMAND_LINE:
        return f"--{name.replace('_', '-')} {value}"
    return f'{name}="{value}"' if isinstance(value, str) else f"{name}={value}"


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
        return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mask


@dataclasses.dataclass(frozen=True)
class FileDataset:
    """Image/mask file pairs (one split of a `unet_jax.layouts.Layout`), read with Pillow,
    checked, and fitted to (height, width) by `fit` ("resize" or "letterbox").

    Mask values >= num_classes that are not `ignore_index` raise, naming the file and the ways
    out (`fixes`, `{classes}` standing for the class count that would hold them), or with
    `out_of_range="ignore"` become the ignore index (as bubbliiiing maps them)."""

    pairs: tuple[tuple[Path, Path], ...]
    num_classes: int
    height: int = 256
    width: int = 256
    channels: int = 3
    binary: bool = False
    fit: str = "resize"
    out_of_range: str = "error"
    ignore_index: int = IGNORE_INDEX
    fixes: str = ""  # "": out_of_range / num_classes, spelled by `option`

    def __post_init__(self):
        if self.fit not in ("resize", "letterbox"):
            raise ValueError(f"fit must be resize or letterbox, got {self.fit!r}")
        if self.out_of_range not in ("error", "ignore"):
            raise ValueError(f"out_of_range must be error or ignore, got {self.out_of_range!r}")

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `index` at its own size, checked."""
        image_path, mask_path = self.pairs[index]
        image = imageio.read_image(image_path, self.channels)
        mask = imageio.read_mask(mask_path, self.binary)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                             f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} (W x H)")
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            if self.out_of_range == "error":
                values = np.unique(mask[bad])
                classes = int(values.max()) + 1
                fixes = (self.fixes.format(classes=classes) if self.fixes else
                         f"map them to the ignore index with {option('out_of_range', 'ignore')}, "
                         f"or train {classes} classes with {option('num_classes', classes)}")
                raise ValueError(f"{mask_path}: mask values {values[:8].tolist()} are neither "
                                 f"classes 0..{self.num_classes - 1} nor the ignore index "
                                 f"{self.ignore_index}: {fixes}")
            mask = np.where(bad, self.ignore_index, mask).astype(np.uint8)
        return image, mask

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return imageio.fit(*self.read(index), (self.height, self.width), self.fit,
                           mask_fill=self.ignore_index)


def without_bad_files(dataset: FileDataset, threads: int = 4) -> tuple[FileDataset, list[str]]:
    """`dataset` less the pairs that cannot be used (every file decoded and checked once, by
    `threads` threads), and one line per pair left out naming the file and the problem."""
    def problem(index: int) -> str | None:
        try:
            dataset.read(index)
        except (OSError, ValueError) as e:
            return str(e)
        return None

    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        problems = list(pool.map(problem, range(len(dataset))))
    kept = tuple(pair for pair, bad in zip(dataset.pairs, problems) if bad is None)
    return dataclasses.replace(dataset, pairs=kept), [bad for bad in problems if bad]


class SkippingBadSamples:
    """A dataset whose samples that fail to read (found after the pre-training scan, e.g. a
    file changed on disk) are replaced by the next readable one, each named once, counted."""

    def __init__(self, base: Dataset):
        self.base, self.num_classes = base, base.num_classes
        self.skipped: dict[int, str] = {}  # index -> problem
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        for k in range(len(self.base)):
            candidate = (index + k) % len(self.base)
            try:
                return self.base[candidate]
            except (OSError, ValueError) as e:
                with self._lock:
                    if candidate not in self.skipped:
                        self.skipped[candidate] = str(e)
                        print(f"skipped a bad sample ({len(self.skipped)} so far): {e}")
        raise ValueError(f"none of the {len(self.base)} samples can be read")


@dataclasses.dataclass(frozen=True)
class TFDS:
    """One split of a tensorflow-datasets dataset with `image` and `segmentation_mask`
    features, read with `tfds.data_source` from a prepared `data_dir` ("": tfds's default)
    in a random-access format (array_record), fitted to (height, width) by `fit`.

    Stored mask values become class ids by adding `label_offset` (None: the `MASK_OFFSETS`
    entry of the dataset, else 0); `ignore_index` stays as it is. Values that are then not
    classes 0..num_classes-1 raise, or with `out_of_range="ignore"` become the ignore index."""

    # How known datasets' stored masks become class ids (the only place such mappings live).
    MASK_OFFSETS: ClassVar[dict[str, int]] = {
        # trimaps 1 pet, 2 background, 3 border -> 0 pet, 1 background, 2 border (3 classes),
        # the `mask - 1` of the TensorFlow tutorial, common with torchvision's OxfordIIITPet
        "oxford_iiit_pet": -1,
    }

    name: str  # as tfds spells it: NAME, NAME/CONFIG, NAME:VERSION
    split: str  # as tfds spells it: train, test, train[:90%]
    num_classes: int
    height: int = 128
    width: int = 128
    channels: int = 3
    data_dir: str = ""
    label_offset: int | None = None
    fit: str = "resize"
    out_of_range: str = "error"
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"tfds:{self.name}: images can be read for models of 1 or 3 input "
                             f"channels, not {self.channels}")
        if self.out_of_range not in ("error", "ignore"):
            raise ValueError(f"out_of_range must be error or ignore, got {self.out_of_range!r}")

    @property
    def offset(self) -> int:
        """What is added to stored mask values (`label_offset`, else the dataset's entry)."""
        if self.label_offset is not None:
            return self.label_offset
        return self.MASK_OFFSETS.get(self.name.split(":")[0].split("/")[0], 0)

    @functools.cached_property
    def source(self):
        """The split's random-access source; a ValueError saying how to prepare it if the
        dataset is not prepared in `data_dir` (nothing is downloaded here)."""
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise ValueError(f"tfds:{self.name} needs tensorflow-datasets: pip install "
                             "'unet-jax[tfds]' (or pip install tensorflow-datasets)") from None
        data_dir = self.data_dir or None
        absl_logger = logging.getLogger("absl")  # quiet: "Variant folder ... has no dataset_info"
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            builder = tfds.builder(self.name, data_dir=data_dir)
            root, prepared = str(builder.data_dir_root), builder.is_prepared()
        except tfds.core.registered.DatasetNotFoundError:
            builder, root, prepared = None, self.data_dir or tfds.core.constants.DATA_DIR, False
        finally:
            absl_logger.setLevel(level)
        if not prepared:
            raise ValueError(
                f"tfds:{self.name} is not prepared in {root}: prepare it with `tfds build "
                f"{self.name} --data_dir {root} --file_format array_record` or `tfds.builder("
                f"{self.name!r}, data_dir={root!r}, file_format='array_record')"
                f".download_and_prepare()`, or point {option('tfds_data_dir', 'DIR')} at the "
                "data_dir it is prepared in")
        try:
            return tfds.data_source(self.name, split=self.split, data_dir=data_dir, download=False)
        except NotImplementedError:  # prepared in a format without random access (tfrecord)
            raise ValueError(
                f"tfds:{self.name} in {root} is stored as {builder.info.file_format.value}, which "
                f"cannot be read by index: prepare it again with --file_format array_record "
                f"(`tfds build {self.name} --data_dir DIR --file_format array_record`) in "
                "another data_dir") from None
        except ValueError as e:  # e.g. an unknown split
            raise ValueError(f"tfds:{self.name}: {e}") from None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image
        item = self.source[index]
        image = np.asarray(item["image"])
        image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        image = np.asarray(image.convert("RGB" if self.channels == 3 else "L"), np.uint8)
        image = image.reshape(*image.shape[:2], self.channels)
        stored = np.asarray(item["segmentation_mask"], np.int64)
        if stored.shape[:2] != image.shape[:2]:
            raise ValueError(f"tfds:{self.name} {self.split} sample {index}: the image is "
                             f"{image.shape[1]}x{image.shape[0]} but its mask "
                             f"{stored.shape[1]}x{stored.shape[0]} (W x H)")
        stored = stored.reshape(image.shape[:2])
        mask = np.where(stored == self.ignore_index, stored, stored + self.offset)
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)
        if bad.any():
            if self.out_of_range == "error":
                values = np.unique(mask[bad])
                classes = int(values.max()) + 1
                shifted = f" (stored values {self.offset:+d})" if self.offset else ""
                raise ValueError(
                    f"tfds:{self.name} {self.split} sample {index}: mask values{shifted} "
                    f"{values[:8].tolist()} are neither classes 0..{self.num_classes - 1}"
                    f" nor the ignore index {self.ignore_index}: map them to the ignore index "
                    f"with {option('out_of_range', 'ignore')}, or train {classes} classes with "
                    f"{option('num_classes', classes)}")
            mask = np.where(bad, self.ignore_index, mask)
        return imageio.fit(image, mask.astype(np.uint8), (self.height, self.width), self.fit,
                           mask_fill=self.ignore_index)
