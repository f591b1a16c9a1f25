"""nnU-Net's preprocessing of one case for a configuration of its plans (DefaultPreprocessor
of nnunetv2 2.8.1): float32, axes reordered by `transpose_forward`, cropped to the non-zero
region (all channels, holes filled), each channel normalised by its scheme, resampled to the
configuration's spacing. `Prepared` keeps what the export needs to undo it."""

import dataclasses

import numpy as np

from unet_jax.data.resampling import new_shape, resample, resample_seg

EPS = 1e-8  # nnU-Net's normalisation floor for the standard deviation (float32 targets)
SCHEMES = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization",
           "RGBTo01Normalization")


class PlansError(ValueError):
    """plans.json asks for something this reproduction does not do."""


@dataclasses.dataclass
class Prepared:
    """A preprocessed case: `data` (C, *shape) float32 in the plans' axis order and spacing;
    `spacing` the case's own (axis order of the plans); `shape_before_crop`, `bbox` (per
    axis [start, stop)) and `shape_after_crop` to undo the crop and resampling; `seg` the
    label map (1, *shape) when one was given, -1 where background lies outside the
    non-zero region."""

    data: np.ndarray
    spacing: tuple[float, ...]
    shape_before_crop: tuple[int, ...]
    bbox: list[list[int]]
    shape_after_crop: tuple[int, ...]
    seg: np.ndarray | None = None


def configuration(plans: dict, name: str) -> dict:
    """The configuration `name` of the plans with `inherits_from` resolved."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise PlansError(f"plans.json has no configuration {name!r} (it has {', '.join(configs)})")
    entry, seen = dict(configs[name]), {name}
    while "inherits_from" in entry:
        parent_name = entry.pop("inherits_from")
        if parent_name in seen or parent_name not in configs:
            raise PlansError(f"configuration {name!r} inherits from {parent_name!r}, which is "
                             + ("a cycle" if parent_name in seen else "not in plans.json"))
        seen.add(parent_name)
        parent = dict(configs[parent_name])
        parent.update(entry)
        entry = parent
    return entry


def target_spacing(config: dict, spacing) -> list[float]:
    """The spacing a case is resampled to; a 2-D configuration keeps the case's first axis."""
    target = list(config["spacing"])
    return [spacing[0], *target] if len(target) < len(spacing) else target


READERS = ("SimpleITKIO", "NibabelIO")  # readers that keep the file's voxel order


def check_supported(plans: dict, config: dict, name: str, training: bool = False) -> None:
    """PlansError for the preprocessing options this reproduction does not cover (the label
    maps' resampling too when `training`)."""
    problems = []
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in READERS:
        problems.append(f"the reader {reader!r} (it reorients or reads other files)")
    for key in ("resampling_fn_data", "resampling_fn_probabilities",
                *(("resampling_fn_seg",) if training else ())):
        if config.get(key) != "resample_data_or_seg_to_shape":
            problems.append(f"{key} {config.get(key)!r}")
        kwargs = config.get(key + "_kwargs", {})
        if "force_separate_z" not in kwargs or kwargs["force_separate_z"] is not None or not {
                "order", "order_z"} <= kwargs.keys():
            problems.append(f"{key}_kwargs {kwargs} (order, order_z and force_separate_z None expected)")
    if training and config.get("resampling_fn_seg_kwargs", {}).get("order_z", 0) != 0:
        problems.append("resampling_fn_seg_kwargs order_z other than 0")
    stats = plans.get("foreground_intensity_properties_per_channel", {})
    for c, scheme in enumerate(config.get("normalization_schemes", ())):
        if scheme == "CTNormalization" and not {"mean", "std", "percentile_00_5", "percentile_99_5"} <= \
                stats.get(str(c), {}).keys():
            problems.append(f"CTNormalization of channel {c} without its intensity properties")
    for scheme in config.get("normalization_schemes", ()):
        if scheme not in SCHEMES:
            problems.append(f"normalization {scheme!r}")
    if config.get("preprocessor_name", "DefaultPreprocessor") != "DefaultPreprocessor":
        problems.append(f"preprocessor {config['preprocessor_name']!r}")
    if config.get("previous_stage"):
        problems.append(f"a cascade stage (previous_stage {config['previous_stage']!r})")
    if problems:
        raise PlansError(f"the nnU-Net configuration {name!r} uses " + ", ".join(problems) + "; unet-jax "
                         "reproduces nnU-Net's default preprocessing (resample_data_or_seg_to_shape, "
                         f"{', '.join(SCHEMES)}), not these")


def nonzero_bbox(data: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """The bounding box [start, stop) per axis of the voxels non-zero in any channel (holes
    filled; an empty volume keeps its whole extent) and that mask."""
    from scipy.ndimage import binary_fill_holes
    mask = binary_fill_holes(np.any(data != 0, axis=0))
    bbox = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        bbox.append([int(hits[0]), int(hits[-1]) + 1] if len(hits) else [0, mask.shape[axis]])
    return bbox, mask


def normalize(image: np.ndarray, scheme: str, use_mask: bool, mask: np.ndarray, stats: dict) -> None:
    """Normalise one channel (float32) in place as nnU-Net's scheme `scheme` does."""
    if scheme == "ZScoreNormalization" and use_mask:
        inside = image[mask]
        image[mask] = (inside - inside.mean()) / max(inside.std(), EPS)
    elif scheme == "ZScoreNormalization":
        mean, std = image.mean(), image.std()
        image -= mean
        image /= max(std, EPS)
    elif scheme == "CTNormalization":
        np.clip(image, stats["percentile_00_5"], stats["percentile_99_5"], out=image)
        image -= stats["mean"]
        image /= max(stats["std"], EPS)
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.clip(image.max(), EPS, None)
    elif scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise ValueError(f"RGBTo01Normalization needs values in 0..255, got {image.min()}..{image.max()}")
        image /= 255.0


def preprocess(data: np.ndarray, spacing, plans: dict, config: dict, seg: np.ndarray | None = None
               ) -> Prepared:
    """`data` (C, z, y, x) at `spacing` (z, y, x), and its label map `seg` (1, z, y, x) when
    given, as nnU-Net's DefaultPreprocessor."""
    if seg is not None and seg.shape[1:] != data.shape[1:]:
        raise ValueError(f"the label map's shape {seg.shape[1:]} differs from the image's {data.shape[1:]}")
    forward = plans["transpose_forward"]
    axes = (0, *(a + 1 for a in forward))
    data = data.astype(np.float32).transpose(axes)
    spacing = tuple(float(spacing[a]) for a in forward)
    before = tuple(data.shape[1:])
    bbox, mask = nonzero_bbox(data)
    box = tuple(slice(a, b) for a, b in bbox)
    data, mask = data[(slice(None), *box)], mask[box]
    if seg is not None:
        seg = np.array(seg.transpose(axes)[(slice(None), *box)], np.int16)
        seg[(seg == 0) & ~mask[None]] = -1
        mask = seg[0] >= 0  # nnU-Net normalises where the label map is not -1
    after = tuple(data.shape[1:])
    target = target_spacing(config, spacing)
    schemes, masked = config["normalization_schemes"], config["use_mask_for_norm"]
    if len(schemes) != data.shape[0]:
        raise ValueError(f"the case has {data.shape[0]} channels; the plans normalise {len(schemes)}")
    stats = plans.get("foreground_intensity_properties_per_channel", {})
    for c in range(data.shape[0]):
        normalize(data[c], schemes[c], masked[c], mask, stats.get(str(c), {}))
    shape = new_shape(after, spacing, target)
    kwargs = config["resampling_fn_data_kwargs"]
    data = resample(data, shape, spacing, target, kwargs["order"], kwargs["order_z"])
    if seg is not None:
        kwargs = config["resampling_fn_seg_kwargs"]
        seg = resample_seg(seg, shape, spacing, target, kwargs["order"], kwargs["order_z"])
    return Prepared(np.ascontiguousarray(data, np.float32), spacing, before, bbox, after, seg)
