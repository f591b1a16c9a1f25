"""nnU-Net's predictor (nnunetv2 2.8.1 `nnUNetPredictor`) for imported nnU-Net models: a case
preprocessed as the plans say, sliding windows over all local devices with mirroring over the
model's allowed axes, the folds' float16 logits averaged, resampled back, made labels (argmax,
or the regions' sigmoids), un-cropped, and written with the input's geometry."""

import dataclasses
import itertools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from unet_jax.checkpoints import sources, workdir
from unet_jax.checkpoints.saved import METADATA, read_json
from unet_jax.convert.api import load_nnunet
from unet_jax.convert.model_folders import is_nnunet_folder
from unet_jax.data import nifti
from unet_jax.data.nnunet_preprocessing import (
    Prepared,
    check_supported,
    configuration,
    preprocess,
    target_spacing,
)
from unet_jax.data.resampling import resample
from unet_jax.inference import sliding_window
from unet_jax.inference.compiled import inference_jit
from unet_jax.models.outputs import last_head


class NotNnunetModelError(ValueError):
    """A model that records no nnU-Net configuration (not imported from an nnU-Net folder)."""


def nnunet_origin(model) -> dict:
    """The nnU-Net facts `unet_jax.load_nnunet` recorded with `model` (plans, dataset.json,
    configuration, mirroring axes)."""
    origin = json.loads(getattr(model.config, "origin", "{}") or "{}")
    if origin.get("kind") != "nnunet":
        raise NotNnunetModelError("this model was not imported from an nnU-Net model folder (it records "
                               "no plans): convert the nnU-Net folder with `unet-jax convert` first")
    return origin


@dataclasses.dataclass(frozen=True)
class Labels:
    """dataset.json's labels: consecutive label values, or regions (each a list of labels,
    predicted by sigmoids and painted in `regions_class_order`)."""

    heads: int
    regions: tuple | None = None
    order: tuple[int, ...] = ()

    @classmethod
    def of(cls, dataset: dict) -> "Labels":
        labels = {k: v for k, v in dataset["labels"].items() if k != "ignore"}
        if any(isinstance(v, list | tuple) and len(v) > 1 for v in labels.values()):  # nnU-Net's rule
            regions = tuple(v if isinstance(v, list | tuple) else [v] for v in labels.values()
                            if v not in (0, [0], (0,)))
            order = dataset.get("regions_class_order")
            if order is None or len(order) != len(regions):
                raise ValueError("dataset.json has regions but no regions_class_order of the same length")
            return cls(len(regions), regions, tuple(order))
        values = sorted(int(v[0] if isinstance(v, list | tuple) else v) for v in labels.values())
        if values != list(range(len(values))):
            raise ValueError(f"dataset.json labels must be 0..K-1, got {values}")
        return cls(len(values))

    def segmentation(self, logits: np.ndarray, with_probabilities: bool):
        """(labels, probabilities or None) of float16 logits (heads, *shape)."""
        if self.regions is not None:
            probs = 1 / (1 + np.exp(-logits.astype(np.float32)))
            seg = np.zeros(logits.shape[1:], np.uint16)
            for i, value in enumerate(self.order):
                seg[probs[i] > 0.5] = value
            return seg, probs if with_probabilities else None
        if not with_probabilities:
            return logits.argmax(0), None
        shifted = logits.astype(np.float32) - logits.astype(np.float32).max(0, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(0, keepdims=True)
        return probs.argmax(0), probs


def _mirror_combinations(axes) -> list[tuple[int, ...]]:
    """nnU-Net's mirrored inputs: every non-empty combination of the allowed axes, by size."""
    return [c for k in range(1, len(axes) + 1) for c in itertools.combinations(axes, k)]


def _window_forward(combinations: list[tuple[int, ...]]):
    """The jitted logits of a batch of windows (B, *patch, C): the model's output and, for each
    combination of spatial axes, that of the flipped input flipped back, summed in nnU-Net's
    order and averaged. The network runs once per variant in a loop (`lax.map`): compiled
    once, one variant's activations alive at a time."""
    flips = [tuple(a + 1 for a in combo) for combo in combinations]

    def forward(model, x):
        variants = jnp.stack([x] + [jnp.flip(x, axes) for axes in flips])
        outputs = jax.lax.map(lambda v: last_head(model(v)), variants)
        logits = outputs[0]
        for i, axes in enumerate(flips, 1):
            logits = logits + jnp.flip(outputs[i], axes)
        return logits / (len(flips) + 1)

    return inference_jit(forward)


class NnunetPredictor:
    """The folds of one nnU-Net configuration (models from `unet_jax.load_nnunet` or
    `unet-jax convert`), predicting as nnUNetPredictor with `tile_step_size` `step`."""

    def __init__(self, models: list[nnx.Module], *, mirroring: bool = True, step: float = 0.5,
                 batch: int = 0):
        if not models:
            raise ValueError("no nnU-Net fold models given")
        if not 0 < step <= 1:
            raise ValueError(f"step {step}: the sliding-window step is a fraction of the patch in (0, 1] "
                             "(nnU-Net's tile_step_size; 0.5 by default)")
        if batch < 0:
            raise ValueError(f"batch {batch}: windows per call must be positive (0: one per local device)")
        origins = [nnunet_origin(m) for m in models]
        first = origins[0]
        for other in origins[1:]:
            if other["configuration"] != first["configuration"] or other["plans"] != first["plans"]:
                raise ValueError("these fold models come from different nnU-Net configurations or plans "
                                 f"({first['configuration']} and {other['configuration']}): give one "
                                 "configuration's folds")
        self.plans, self.dataset = first["plans"], first["dataset"]
        self.configuration_name = first["configuration"]
        self.config = configuration(self.plans, self.configuration_name)
        check_supported(self.plans, self.config, self.configuration_name)
        self.patch = tuple(self.config["patch_size"])
        self.labels = Labels.of(self.dataset)
        for model, origin in zip(models, origins, strict=True):
            if model.config.num_classes != self.labels.heads:
                raise ValueError(f"fold {origin.get('fold')} outputs {model.config.num_classes} channels; "
                                 f"dataset.json's labels need {self.labels.heads}")
        self.channels = len(self.dataset.get("channel_names", self.dataset.get("modality", {})))
        axes = first.get("inference_allowed_mirroring_axes")
        self.mirror_axes = tuple(axes) if mirroring and axes is not None else ()
        self.step = step
        self.devices = jax.local_devices()
        mesh = jax.sharding.Mesh(np.array(self.devices), ("data",))
        self.sharding = NamedSharding(mesh, P("data"))
        per_call = batch or len(self.devices)
        self.batch = len(self.devices) * -(-per_call // len(self.devices))
        self.forward = _window_forward(_mirror_combinations(self.mirror_axes))
        self.models = []
        for model in models:
            model.eval()
            graphdef, state = nnx.split(model)
            self.models.append(nnx.merge(graphdef, jax.device_put(state, NamedSharding(mesh, P()))))
        self.folds = [o.get("fold") for o in origins]

    def _predict(self, model):
        return lambda windows: np.asarray(self.forward(model, jax.device_put(windows, self.sharding)))

    def logits(self, prepared: Prepared) -> np.ndarray:
        """The folds' averaged float16 logits (heads, *preprocessed shape), as nnU-Net sums
        them (float16, in fold order)."""
        total = None
        for model in self.models:
            fold = sliding_window.predict_logits(self._predict(model), prepared.data, self.patch,
                                                 self.labels.heads, self.step, self.batch)
            total = fold if total is None else (total.astype(np.float32) + fold).astype(np.float16)
        if len(self.models) > 1:
            total = (total.astype(np.float32) / np.float32(len(self.models))).astype(np.float16)
        return total

    def prepare(self, case: nifti.Case) -> Prepared:
        if case.data.shape[0] != self.channels:
            raise ValueError(f"the case has {case.data.shape[0]} channel(s); this model takes "
                             f"{self.channels} ({', '.join(self._channel_names())})")
        return preprocess(case.data, case.spacing, self.plans, self.config)

    def _channel_names(self) -> list[str]:
        names = self.dataset.get("channel_names", self.dataset.get("modality", {}))
        return [f"_{int(k):04d} {v}" for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))]

    def export(self, logits: np.ndarray, prepared: Prepared, with_probabilities: bool = False):
        """(labels in the case's (z, y, x), probabilities (heads, z, y, x) or None) of the
        logits of `prepared`: resampled back, labelled, un-cropped, axes restored."""
        kwargs = self.config["resampling_fn_probabilities_kwargs"]
        current = target_spacing(self.config, prepared.spacing)
        logits = resample(logits, prepared.shape_after_crop, current, prepared.spacing, kwargs["order"],
                          kwargs["order_z"])
        seg, probs = self.labels.segmentation(logits, with_probabilities)
        box = tuple(slice(a, b) for a, b in prepared.bbox)
        backward = self.plans["transpose_backward"]
        full = np.zeros(prepared.shape_before_crop, np.uint8 if self.labels.heads < 255 else np.uint16)
        full[box] = seg
        full = full.transpose(backward)
        if probs is None:
            return full, None
        everywhere = np.zeros((probs.shape[0], *prepared.shape_before_crop), np.float32)
        if self.labels.regions is None:
            everywhere[0] = 1  # background outside the crop
        everywhere[(slice(None), *box)] = probs
        return full, everywhere.transpose(0, *(a + 1 for a in backward))

    def predict_files(self, files: list[str | Path], output: str | Path, with_probabilities: bool = False):
        """Predict the case of channel files `files` and write `output` (.nii.gz, the input's
        geometry) and, on request, `output` with .npz (probabilities, (heads, z, y, x))."""
        case = nifti.read_case(files)
        prepared = self.prepare(case)
        seg, probs = self.export(self.logits(prepared), prepared, with_probabilities)
        nifti.write_like(seg, case.reference, output)
        if probs is not None:
            np.savez_compressed(Path(str(output).removesuffix(".gz").removesuffix(".nii") + ".npz"),
                                probabilities=probs)
        return seg


def open_folds(path: str | Path, folds=None) -> list[nnx.Module]:
    """The fold models at `path`: an nnU-Net trained-model folder (imported now; needs torch
    and dynamic-network-architectures), a folder of `unet-jax convert`'s fold_N saved models,
    or one saved model; `folds` picks some (names or numbers)."""
    path = Path(path)
    wanted = None if folds is None else {str(f).removeprefix("fold_") for f in folds}
    if is_nnunet_folder(path):
        found = {p.parent.name.removeprefix("fold_") for p in path.glob("fold_*/checkpoint_*.pth")}
    elif (path / METADATA).is_file() or workdir.is_workdir(path):
        return [sources.load(path)]
    else:
        found = {p.parent.name.removeprefix("fold_") for p in path.glob(f"fold_*/{METADATA}")}
    if wanted is not None and wanted - found:
        raise NotNnunetModelError(f"{path} has no fold(s) {', '.join(sorted(wanted - found))}; it has "
                                  f"{', '.join(sorted(found)) or 'none'}")
    if is_nnunet_folder(path):
        return list(load_nnunet(path, None if wanted is None else sorted(wanted)).values())
    saved = sorted(path / f"fold_{f}" for f in (found if wanted is None else wanted))
    if not saved:
        raise NotNnunetModelError(f"{path} is not an nnU-Net model folder (plans.json, dataset.json, "
                                  "fold_N/checkpoint_final.pth), a folder of converted fold_N models "
                                  "or a saved nnU-Net model"
                                  + (f" with folds {sorted(wanted)}" if wanted else ""))
    return [sources.load(p) for p in saved]


def is_volume_model(path: str | Path) -> bool:
    """Whether `path` is an nnU-Net model folder, a folder of its converted folds or a
    workdir training an nnU-Net network."""
    path = Path(path)
    if not path.is_dir():
        return False
    if is_nnunet_folder(path):
        return True
    metas = [path / workdir.RUN] if workdir.is_workdir(path) else sorted(path.glob(f"fold_*/{METADATA}"))
    if not metas:
        return False
    try:
        origin = json.loads(read_json(metas[0]).get("config", {}).get("origin", "{}") or "{}")
    except (ValueError, AttributeError):
        return False
    return origin.get("kind") == "nnunet"
