"""Training data from volumes the way nnU-Net 2.8.1 makes it: every case preprocessed once
for the configuration (`nnunet_preprocessing`, the label map included) and kept on disk,
memory-mapped; nnU-Net's 5-fold split (or `splits_final.json`); patches placed by its
`get_bbox` (the last third of every batch centred on a voxel of a foreground class), then
its augmentation (`volume_augment`). Samples are channels-last, masks uint8 with -1 (outside
the non-zero region) made background, as nnU-Net's RemoveLabelTansform does.

One difference: nnU-Net draws each batch's cases at random with replacement; here every
epoch visits the cases in a shuffled round robin, so each case is seen equally often."""

import dataclasses
import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from unet_jax.data import nifti
from unet_jax.data.nnunet_preprocessing import preprocess
from unet_jax.data.volume_augment import VolumeAugmentation
from unet_jax.data.volume_layouts import VolumeCase

CACHE_ENV = "UNET_JAX_VOLUME_CACHE"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "unet_jax", "volumes")
OVERSAMPLE_FOREGROUND = 0.33  # nnU-Net's oversample_foreground_percent
LOCATIONS, LOCATIONS_SHARE, LOCATIONS_SEED = 10_000, 0.01, 1234  # _sample_foreground_locations


@dataclasses.dataclass(frozen=True)
class CachedCase:
    """A preprocessed case on disk: data (C, *shape) float32, seg (*shape) int16 and the
    sampled voxels of each foreground label (nnU-Net's class_locations)."""

    name: str
    data_file: Path
    seg_file: Path
    locations_file: Path

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.load(self.data_file, mmap_mode="r"), np.load(self.seg_file, mmap_mode="r")

    def locations(self) -> dict[int, np.ndarray]:
        with np.load(self.locations_file) as found:
            return {int(k): found[k] for k in found.files}


def foreground_locations(seg: np.ndarray, labels: list[int]) -> dict[int, np.ndarray]:
    """{label: (n, ndim) voxel indices}: per foreground label, min(all, max(10000, 1% of
    them)) of its voxels drawn without replacement, seeded (nnU-Net's
    `_sample_foreground_locations`; an absent label gets none)."""
    rng = np.random.RandomState(LOCATIONS_SEED)
    found = {}
    for label in labels:
        where = np.argwhere(seg == label)
        count = max(min(LOCATIONS, len(where)), int(np.ceil(len(where) * LOCATIONS_SHARE)))
        found[label] = where[np.sort(rng.choice(len(where), count, replace=False))] if len(where) else where
    return found


CACHE_VERSION = 1  # raised when the preprocessing code changes what it writes


def cache_folder(plans: dict, configuration: str, config: dict, labels: list[int]) -> Path:
    """Where the cases preprocessed for `configuration` live: keyed by everything but the
    files that the result depends on (the configuration, the plans' axes and intensity
    statistics, the foreground labels, this code's version); each case's files are checked
    by its stamp."""
    facts = {"configuration": config, "transpose": plans.get("transpose_forward"),
             "intensities": plans.get("foreground_intensity_properties_per_channel"),
             "labels": labels, "version": CACHE_VERSION}
    key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    root = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    return root / f"{plans.get('dataset_name', 'dataset')}_{configuration}_{key}"


def _stamp(case: VolumeCase) -> str:
    """The case's files as they are now: path, size and modification time of each."""
    return json.dumps([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
                       for p in (*case.images, case.label) if p is not None])


def prepare_cases(cases: list[VolumeCase], plans: dict, configuration: str, config: dict,
                  foreground: list[int], threads: int = 2) -> list[CachedCase]:
    """Every case preprocessed once into the cache (reused while its files are unchanged,
    for every fold); each file written whole under a name of its own before it is renamed,
    the stamp last, so an interrupted run or a second process leaves no half case."""
    folder = cache_folder(plans, configuration, config, foreground)
    folder.mkdir(parents=True, exist_ok=True)
    allowed = {0, *foreground}

    def one(case: VolumeCase) -> CachedCase:
        cached = CachedCase(case.name, folder / f"{case.name}.npy", folder / f"{case.name}_seg.npy",
                            folder / f"{case.name}_locations.npz")
        stamp, stamp_file = _stamp(case), folder / f"{case.name}.stamp"
        if stamp_file.is_file() and stamp_file.read_text() == stamp:
            return cached
        if case.label is None:
            raise ValueError(f"case {case.name} has no label file: training needs labelsTr/{case.name}")
        image = nifti.read_case(list(case.images))
        label = nifti.read_case([case.label]).data
        values = set(np.unique(label).tolist())
        if values - allowed:
            raise ValueError(f"{case.label}: label values {sorted(values - allowed)[:8]} are not among "
                             f"dataset.json's labels {sorted(allowed)}")
        try:
            prepared = preprocess(image.data, image.spacing, plans, config, label.astype(np.int16))
        except ValueError as e:
            raise ValueError(f"case {case.name}: {e}") from None
        seg = prepared.seg[0]
        _write(folder, cached.data_file, lambda f: np.save(f, prepared.data))
        _write(folder, cached.seg_file, lambda f: np.save(f, seg))
        locations = foreground_locations(seg, foreground)
        _write(folder, cached.locations_file,
               lambda f: np.savez(f, **{str(k): v for k, v in locations.items()}))
        _write(folder, stamp_file, lambda f: f.write(stamp.encode()))
        return cached

    with ThreadPoolExecutor(max(threads, 1)) as pool:
        return list(pool.map(one, cases))


def _write(folder: Path, path: Path, save) -> None:
    with tempfile.NamedTemporaryFile(dir=folder, prefix=path.name, suffix=".partial", delete=False) as f:
        save(f)
    os.replace(f.name, path)


def fold_split(names: list[str], fold: int, folds: int = 5, seed: int = 12345
               ) -> tuple[list[str], list[str]]:
    """(train, val) case names of `fold` in nnU-Net's default split: scikit-learn's
    `KFold(folds, shuffle=True, random_state=12345)` over the sorted names (the first
    `len % folds` folds one longer), each list in sorted order."""
    names = sorted(names)
    if len(names) < folds:
        raise ValueError(f"{len(names)} training cases cannot make {folds} folds: give "
                         "splits_final.json or more cases")
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold}: nnU-Net's split has folds 0..{folds - 1}")
    order = np.arange(len(names))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(folds, len(names) // folds)
    sizes[:len(names) % folds] += 1
    start = int(sizes[:fold].sum())
    held = set(order[start:start + sizes[fold]].tolist())
    return ([n for i, n in enumerate(names) if i not in held], [n for i, n in enumerate(names) if i in held])


def split_of(names: list[str], fold: int, splits_file: Path | None) -> tuple[list[str], list[str]]:
    """(train, val) names of `fold`: from `splits_file` (nnU-Net's splits_final.json, a list
    of {"train", "val"}) when there is one, else nnU-Net's default split."""
    if splits_file is None or not splits_file.is_file():
        return fold_split(names, fold)
    try:
        splits = json.loads(splits_file.read_text())
        train, val = list(splits[fold]["train"]), list(splits[fold]["val"])
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{splits_file} is not readable nnU-Net splits ({e})") from e
    except (IndexError, KeyError, TypeError):
        raise ValueError(f"{splits_file} has no fold {fold} with 'train' and 'val' lists") from None
    unknown = sorted(set(train + val) - set(names))
    if unknown:
        raise ValueError(f"{splits_file} names cases the data lacks: {', '.join(unknown[:5])}")
    both = sorted(set(train) & set(val))
    if both:
        raise ValueError(f"{splits_file} fold {fold} has cases in train and val: {', '.join(both[:5])}")
    if not train or not val:
        raise ValueError(f"{splits_file} fold {fold} has an empty {'train' if not train else 'val'} list")
    return list(dict.fromkeys(train)), list(dict.fromkeys(val))


def forced_foreground(row: int, batch_size: int) -> bool:
    """Whether row `row` of a batch is centred on foreground (nnU-Net: rows from
    round(batch_size * (1 - 0.33)) on)."""
    return not row < round(batch_size * (1 - OVERSAMPLE_FOREGROUND))


def patch_lower(shape, patch, need_to_pad, rng: np.random.Generator,
                locations: dict[int, np.ndarray] | None) -> list[int]:
    """The lower corner of a patch as nnU-Net's `get_bbox`: uniform over the positions that
    keep it within the volume padded by `need_to_pad` (more where the volume is smaller than
    the patch), or, given `locations`, centred on a random voxel of a random present class."""
    pad = [max(n, p - s) for n, p, s in zip(need_to_pad, patch, shape, strict=True)]
    lower = [-n // 2 for n in pad]
    upper = [s + n // 2 + n % 2 - p for s, n, p in zip(shape, pad, patch, strict=True)]
    present = [k for k, v in (locations or {}).items() if len(v)]
    if not present:
        return [int(rng.integers(a, b + 1)) for a, b in zip(lower, upper, strict=True)]
    voxels = locations[present[rng.integers(len(present))]]
    voxel = voxels[rng.integers(len(voxels))]
    return [max(a, int(v) - p // 2) for a, v, p in zip(lower, voxel, patch, strict=True)]


class VolumePatches:
    """Patches of preprocessed cases as `(image (*patch, C) float32, mask (*patch) uint8)`;
    a 2-D patch of 3-D cases is cut from one slice (nnU-Net's box one slice deep).

    Training (`augmentation` given): `sample(index, rng, row)` draws a new patch of case
    `index % cases` on every visit, forced onto foreground by its row in the batch,
    augmented; there are `steps * batch_size` of them an epoch. Validation: item i is a
    fixed patch (seeded by i, the same rows forced, no augmentation), as many as asked."""

    draws_samples = True  # the input pipeline asks `sample` for each visit (unet_jax.data.pipeline)

    def __init__(self, cases: list[CachedCase], patch_size, batch_size: int, length: int,
                 augmentation: VolumeAugmentation | None, *, seed: int = 0,
                 ignore: tuple[int, int] | None = None):
        if not cases:
            raise ValueError("no cases to draw patches from (an empty split)")
        self.cases, self.patch_size, self.batch_size = cases, tuple(patch_size), batch_size
        self.length, self.augmentation, self.seed, self.ignore = length, augmentation, seed, ignore
        self.crop = VolumeAugmentation.for_patch(self.patch_size, p_rotation=0.0, p_scaling=0.0)
        # nnU-Net places a box of the enlarged size rotations need (validation: the patch)
        self.box = tuple(augmentation.initial_patch_size()) if augmentation else self.patch_size
        self.need_to_pad = [a - b for a, b in zip(self.box, self.patch_size, strict=True)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        """A fixed patch (validation, and the checks before training)."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        return self._patch(index, rng, index % self.batch_size, augmented=False)

    def sample(self, index: int, rng: np.random.Generator, row: int):
        """A new patch of case `index % cases` for row `row` of a training batch."""
        return self._patch(index, rng, row, augmented=self.augmentation is not None)

    def _patch(self, index: int, rng: np.random.Generator, row: int, augmented: bool):
        case = self.cases[index % len(self.cases)]
        data, seg = case.arrays()
        locations = case.locations() if forced_foreground(row, self.batch_size) else None
        if len(self.patch_size) == seg.ndim - 1:  # a 2-D configuration: a box one slice deep
            box = patch_lower(seg.shape, (1, *self.box), (0, *self.need_to_pad), rng, locations)
            data, seg, box = data[:, box[0]], seg[box[0]], box[1:]
        else:
            box = patch_lower(seg.shape, self.box, self.need_to_pad, rng, locations)
        # the patch centred on the box's centre voxel, as nnU-Net's crop_tensor
        lower = [b + n // 2 - p // 2 for b, n, p in zip(box, self.box, self.patch_size)]
        transform = self.augmentation if augmented else self.crop
        image, mask = transform.spatial(data, seg, lower, rng)
        if augmented:
            image, mask = transform.intensity_and_mirror(image, mask, rng)
        mask = np.where(mask < 0, 0, mask)
        if self.ignore is not None:
            mask = np.where(mask == self.ignore[0], self.ignore[1], mask)
        return (np.ascontiguousarray(np.moveaxis(image, 0, -1), np.float32),
                mask.astype(np.uint8))
