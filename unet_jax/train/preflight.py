"""Every configuration and data problem found before the first step, reported at once."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unet_jax import registry
from unet_jax.train.config import TrainConfig


def preflight(cfg: TrainConfig, model: nnx.Module, splits: dict) -> None:
    """Find every configuration and data problem before the first step: batch and device
    counts, split sizes, one sample per split (shapes, channels, mask values) and whether
    the arch takes the image size. Raises one ValueError listing all problems."""
    problems = []
    devices, processes = jax.device_count(), jax.process_count()
    if cfg.batch_size < 1 or cfg.batch_size % devices:
        problems.append(f"batch_size {cfg.batch_size} must be a positive multiple of the "
                        f"{devices} devices")
    if cfg.epochs < 1:
        problems.append(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.log_every < 1:
        problems.append(f"log_every must be >= 1, got {cfg.log_every}")
    channels = registry.uniform_option(model, "in_channels")
    n_classes = max(cfg.num_classes, 2)
    for name, dataset in splits.items():
        try:
            count = len(dataset)
        except (OSError, ValueError) as e:
            problems.append(f"{name} split: {e}")
            continue
        if count == 0 or (name == "train" and count < cfg.batch_size):
            problems.append(f"the {name} split has {count} samples, fewer than one batch of "
                            f"{cfg.batch_size}" if name == "train" else f"the {name} split is empty")
            continue
        try:
            image, mask = dataset[0]
        except (OSError, ValueError) as e:
            problems.append(f"{name} split, sample 0: {e}")
            continue
        size = tuple(getattr(dataset, "patch_size", (cfg.image_size, cfg.image_size)))
        if image.shape != (*size, channels) or mask.shape != size:
            problems.append(f"{name} split, sample 0: image {image.shape} and mask {mask.shape}; "
                            f"the model needs images {(*size, channels)} and masks {size}")
        bad = np.unique(mask[(mask >= n_classes) & (mask != cfg.ignore_index)])
        if bad.size:
            problems.append(f"{name} split, sample 0: mask values {bad[:8].tolist()} are neither "
                            f"classes 0..{n_classes - 1} nor the ignore index {cfg.ignore_index}")
    size = tuple(getattr(splits["train"], "patch_size", (cfg.image_size, cfg.image_size)))
    try:
        graphdef, state = nnx.split(model)
        x = jax.ShapeDtypeStruct((1, *size, channels), jnp.float32)
        jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    except ValueError as e:
        given = (f"image_size {cfg.image_size}" if not hasattr(splits["train"], "patch_size")
                 else f"patch {'x'.join(map(str, size))}")
        problems.append(f"{given}: {e}")
    if processes > 1 and cfg.batch_size % processes:
        problems.append(f"batch_size {cfg.batch_size} must split evenly over {processes} processes")
    if problems:
        raise ValueError("cannot start training:\n  - " + "\n  - ".join(problems))
