"""Dataset folder layouts as the upstreams read them, detected under one root.

- voc: `VOCdevkit/VOC20xx/{JPEGImages,SegmentationClass}`, split lists
  `ImageSets/Segmentation/{train,val}.txt` (bubbliiiing/unet-pytorch);
- camvid: `{train,valid}_images/` + `{train,valid}_labels/` (the UNet++ seed) or
  `{train,val}/` + `{train,val}annot/` (pytorch-semseg);
- carvana: `imgs/`, `masks/<id>_mask.*` (milesial/Pytorch-UNet; 0/255 or 0/1);
- isic: `train/`, `train_GT/<id>_segmentation.png` (LeeJunHyun; binary), optional `valid/`;
- images: `{train,val}/{images,masks}/`, or `images/` + `masks/`.

Where a layout has no validation split, `SPLIT_RULE` holds out a seeded 10% (at least one
sample). Masks are palette, L or RGB PNGs (first channel) of class ids; binary layouts map
255 to 1.
"""

import dataclasses
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
MASK_SUFFIXES = ("_mask", "_segmentation", "_label", "_labels", "_gt", "_L")  # stripped to match
VAL_FRACTION, SPLIT_SEED = 0.1, 0
SPLIT_RULE = (f"a seeded {VAL_FRACTION:.0%} (at least 1) of the sorted files held out for val "
              f"(numpy default_rng({SPLIT_SEED}).permutation)")


class DataLayoutError(ValueError):
    """A dataset folder that no layout reads, or a file of it that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """A detected dataset: `splits[name]` = [(image path, mask path), ...]."""

    name: str
    root: Path
    splits: dict[str, list[tuple[Path, Path]]]
    binary: bool = False  # masks are 0/255 (or 0/1) foreground masks: 255 means class 1
    split_rule: str = "the layout's own splits"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _stem(path: Path) -> str:
    stem = path.stem
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def pair(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """Images of folder `images` with their masks in `masks`, matched by file stem (a mask
    may add `_mask`, `_segmentation`, ... to it). Raises naming the images without a mask."""
    by_stem = {}
    for m in _images(masks):
        by_stem.setdefault(m.stem, m)
        by_stem.setdefault(_stem(m), m)
    files = _images(images)
    missing = [p.name for p in files if p.stem not in by_stem]
    if missing:
        raise DataLayoutError(f"{len(missing)} image(s) in {images} have no mask in {masks}: "
                              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return [(p, by_stem[p.stem]) for p in files]


def held_out(pairs: list) -> dict[str, list]:
    """{"train", "val"} by `SPLIT_RULE`."""
    if len(pairs) < 2:
        raise DataLayoutError(f"cannot split {len(pairs)} sample(s) into train and val")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pairs))
    n_val = max(1, round(VAL_FRACTION * len(pairs)))
    val = set(order[:n_val].tolist())
    return {"train": [p for i, p in enumerate(pairs) if i not in val],
            "val": [p for i, p in enumerate(pairs) if i in val]}


def _voc(root: Path) -> Layout | None:
    candidates = [root, *(root / f"VOC{y}" for y in (2012, 2007)),
                  *(root / "VOCdevkit" / f"VOC{y}" for y in (2012, 2007))]
    for base in candidates:
        if (base / "JPEGImages").is_dir() and (base / "SegmentationClass").is_dir():
            break
    else:
        return None
    lists = base / "ImageSets" / "Segmentation"
    splits = {}
    for split in ("train", "val"):
        listing = lists / f"{split}.txt"
        if not listing.is_file():
            raise DataLayoutError(f"{base} is a VOC layout but {listing} is missing")
        names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        pairs = [(base / "JPEGImages" / f"{n}.jpg", base / "SegmentationClass" / f"{n}.png")
                 for n in names]
        missing = [str(p) for pr in pairs for p in pr if not p.is_file()]
        if missing:
            raise DataLayoutError(f"{listing} names {len(missing)} file(s) that do not exist: "
                                  f"{', '.join(missing[:4])}")
        splits[split] = pairs
    return Layout("voc", base, splits)


def _camvid(root: Path) -> Layout | None:
    for train, val, suffix in (("train_images", "valid_images", "_labels"),
                               ("train", "val", "annot")):
        stems = (train.replace("_images", ""), val.replace("_images", ""))
        labels = [root / f"{s}{suffix}" for s in stems]
        if (root / train).is_dir() and (root / val).is_dir() and all(p.is_dir() for p in labels):
            return Layout("camvid", root, {"train": pair(root / train, labels[0]),
                                           "val": pair(root / val, labels[1])})
    return None


def _carvana(root: Path) -> Layout | None:
    if not ((root / "imgs").is_dir() and (root / "masks").is_dir()):
        return None
    return Layout("carvana", root, held_out(pair(root / "imgs", root / "masks")), binary=True,
                  split_rule=SPLIT_RULE)


def _isic(root: Path) -> Layout | None:
    if not ((root / "train").is_dir() and (root / "train_GT").is_dir()):
        return None
    train = pair(root / "train", root / "train_GT")
    if (root / "valid").is_dir() and (root / "valid_GT").is_dir():
        return Layout("isic", root, {"train": train, "val": pair(root / "valid", root / "valid_GT")},
                      binary=True)
    return Layout("isic", root, held_out(train), binary=True, split_rule=SPLIT_RULE)


def _images_masks(root: Path) -> Layout | None:
    if all((root / s / d).is_dir() for s in ("train", "val") for d in ("images", "masks")):
        return Layout("images", root, {s: pair(root / s / "images", root / s / "masks")
                                       for s in ("train", "val")})
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return Layout("images", root, held_out(pair(root / "images", root / "masks")),
                      split_rule=SPLIT_RULE)
    return None


READERS = {"voc": _voc, "camvid": _camvid, "carvana": _carvana, "isic": _isic,
           "images": _images_masks}
EXPECTED = {
    "voc": "VOCdevkit/VOC2007 (or VOC2012) with JPEGImages/, SegmentationClass/ and "
           "ImageSets/Segmentation/{train,val}.txt",
    "camvid": "train_images/, train_labels/, valid_images/, valid_labels/ or train/, "
              "trainannot/, val/, valannot/",
    "carvana": "imgs/ and masks/ (<id>_mask.*)",
    "isic": "train/ and train_GT/ (<id>_segmentation.png), optionally valid/ and valid_GT/",
    "images": "{train,val}/{images,masks}/ or images/ and masks/",
}


def detect(root: str | Path, layout: str = "") -> Layout:
    """The layout of `root`: `layout` if named (voc, camvid, carvana, isic, images), else the
    first that matches. Raises DataLayoutError saying what each layout expects."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"{root} is not a directory")
    if layout and layout not in READERS:
        raise DataLayoutError(f"unknown layout {layout!r}; layouts: {', '.join(READERS)}")
    for name in [layout] if layout else READERS:
        found = READERS[name](root)
        if found is not None:
            return found
    expected = "\n  - ".join(f"{n}: {EXPECTED[n]}" for n in ([layout] if layout else READERS))
    raise DataLayoutError(f"{root} is not a dataset layout unet-jax reads; expected\n  - {expected}")


def from_spec(spec: str) -> Layout:
    """The dataset of a data spec: `folder:PATH` (detected), `LAYOUT:PATH`, or a plain PATH."""
    kind, sep, path = spec.partition(":")
    if sep and kind in ("folder", *READERS):
        return detect(path, "" if kind == "folder" else kind)
    return detect(spec)
