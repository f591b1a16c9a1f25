"""The training and validation datasets a `TrainConfig` names."""

from unet_jax import presets
from unet_jax.data import datasets as data_lib
from unet_jax.data import layouts
from unet_jax.train.config import TrainConfig

FILE_LAYOUTS = ("folder", *layouts.READERS)  # data kinds read from files (folder: detected)


def make_datasets(cfg: TrainConfig, channels: int = 3) -> tuple[data_lib.Dataset, data_lib.Dataset]:
    """(train, val) datasets of `cfg.data` at the training size, images of `channels`."""
    kind, _, arg = cfg.data.partition(":")
    size = dict(height=cfg.image_size, width=cfg.image_size)
    n_classes = max(cfg.num_classes, 2)
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
    if kind == "tfds":
        return (data_lib.TFDS(arg, "train", n_classes, **size),
                data_lib.TFDS(arg, "test", n_classes, **size))
    raise ValueError(f"data must be synthetic, {':PATH, '.join(FILE_LAYOUTS)}:PATH or tfds:NAME, "
                     f"got {cfg.data!r}")


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
