"""The training and validation datasets a `TrainConfig` names."""

import re

from unet_jax import presets
from unet_jax.data import datasets as data_lib
from unet_jax.data import layouts
from unet_jax.train.config import TrainConfig

FILE_LAYOUTS = ("folder", *layouts.READERS)  # data kinds read from files (folder: detected)
TFDS_VERSION = re.compile(r"\d+(\.(\d+|\*))*")  # a version after a tfds name (`mnist:3.*.*`)


def make_datasets(cfg: TrainConfig, channels: int = 3) -> tuple[data_lib.Dataset, data_lib.Dataset]:
    """(train, val) datasets of `cfg.data` at the training size, images of `channels`."""
    kind, _, arg = cfg.data.partition(":")
    size = dict(height=cfg.image_size, width=cfg.image_size)
    n_classes = max(cfg.num_classes, 2)
    if cfg.tfds_data_dir and kind != "tfds":
        raise ValueError(f"tfds_data_dir is for data tfds:NAME, not {cfg.data!r}")
    if kind == "synthetic":
        return (data_lib.Shapes(cfg.train_samples, num_classes=n_classes, seed=cfg.seed,
                                channels=channels, **size),
                data_lib.Shapes(cfg.val_samples, num_classes=n_classes, seed=cfg.seed + 1,
                                channels=channels, **size))
    if kind in FILE_LAYOUTS and arg:
        found = layouts.from_spec(cfg.data)
        fit = presets.get(cfg.preprocess or "unit").training_fit
        return tuple(data_lib.FileDataset(tuple(found.splits[s]), n_classes, channels=channels,
                                          binary=found.binary, fit=fit, out_of_range=cfg.out_of_range,
                                          ignore_index=cfg.ignore_index, **size)
                     for s in ("train", "val"))
    if kind == "tfds" and arg:
        name, train_split, val_split = tfds_spec(arg)
        fit = presets.get(cfg.preprocess or "unit").training_fit
        sets = tuple(data_lib.TFDS(name, split, n_classes, channels=channels,
                                   data_dir=cfg.tfds_data_dir, fit=fit, out_of_range=cfg.out_of_range,
                                   ignore_index=cfg.ignore_index, **size)
                     for split in (train_split, val_split))
        for dataset in sets:
            dataset.source  # noqa: B018 -- not prepared, unknown split: one error now
        return sets
    raise ValueError(f"data must be synthetic, {':PATH, '.join(FILE_LAYOUTS)}:PATH or "
                     f"tfds:NAME[:TRAIN_SPLIT:VAL_SPLIT], got {cfg.data!r}")


def tfds_spec(arg: str) -> tuple[str, str, str]:
    """(name, train split, val split) of the `NAME[:VERSION][:TRAIN_SPLIT[:VAL_SPLIT]]` after
    `tfds:`, names and splits as tfds spells them (`oxford_iiit_pet:4.*.*`, `train[:90%]`);
    the splits default to train and test."""
    name, *splits = re.split(r":(?![^\[]*\])", arg)  # not the colons of slices: train[:90%]
    if splits and TFDS_VERSION.fullmatch(splits[0]):
        name += ":" + splits.pop(0)
    if len(splits) > 2:
        raise ValueError(f"tfds:{arg}: expected tfds:NAME[:TRAIN_SPLIT:VAL_SPLIT], e.g. "
                         "tfds:oxford_iiit_pet:train[:90%]:train[90%:]")
    train_split, val_split = [*splits, "", ""][:2]
    return name, train_split or "train", val_split or "test"


def skipping_bad_files(dataset: data_lib.Dataset, split: str, threads: int) -> data_lib.Dataset:
    """bad_files=skip: a file dataset less its unreadable pairs (named, counted, before the
    first step), any sample failing later replaced by the next one (named, counted)."""
    if isinstance(dataset, data_lib.FileDataset):
        total = len(dataset)
        dataset, problems = data_lib.without_bad_files(dataset, threads)
        if problems:
            print(f"skipped {len(problems)} of {total} {split} samples (bad files):")
            for line in problems:
                print(f"  - {line}")
    return data_lib.SkippingBadSamples(dataset)
