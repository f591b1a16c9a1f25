"""Training on volumes as nnU-Net 2.8.1 trains (`nnUNetTrainer`): the configuration's
network from its plans with deep supervision, imported (fresh, or with a fold's or a saved
model's weights), the cases preprocessed by the plans, patches and augmentation as
`volume_patches`, nnU-Net's loss and optimizer as the defaults. The loop, mesh, dtype,
remat, checkpoints and workdir are `unet_jax.train`'s, as for images."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax.checkpoints import sources
from unet_jax.convert.export import to_torch_state_dict
from unet_jax.convert.model_folders import (
    is_nnunet_folder,
    module_channels,
    nnunet_network,
    read_fold,
    read_json,
    segmentation_heads,
)
from unet_jax.convert.torch_export import import_torch
from unet_jax.data import volume_layouts
from unet_jax.data.nnunet_preprocessing import check_supported, configuration
from unet_jax.data.volume_augment import VolumeAugmentation
from unet_jax.data.volume_patches import VolumePatches, prepare_cases, split_of
from unet_jax.inference.nnunet import nnunet_origin
from unet_jax.models import outputs, recorded
from unet_jax.train.config import TrainConfig
from unet_jax.train.losses import nnunet_head_weights

KINDS = ("nnunet", "msd")  # volume data specs: nnunet:PATH, msd:PATH (folder:PATH detects them)
NNUNET_DEFAULTS = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.99, "nesterov": True,
                   "weight_decay": 3e-5, "schedule": "poly_epoch", "clip_norm": 12.0,
                   "warmup_epochs": 0.0}  # nnUNetTrainer's, taken where a field is left at its default
UNSET = {"lr": 0.0, "warmup_epochs": -1.0}  # TrainConfig's "from the arch" values
IMAGE_ONLY = {"image_size": 0, "augment": "", "out_of_range": "error", "bad_files": "error"}


def volume_layout(data: str) -> volume_layouts.VolumeLayout | None:
    """The volume dataset a `data` spec names (nnunet:PATH, msd:PATH, or folder:PATH holding
    one), else None."""
    kind, _, path = data.partition(":")
    if kind not in (*KINDS, "folder") or not path:
        return None
    layout = volume_layouts.detect(path)
    if kind in KINDS and (layout is None or layout.name != kind):
        raise ValueError(f"{data}: {path} holds no {kind} dataset (dataset.json with "
                         + ("channel_names and imagesTr/" if kind == "nnunet" else "training / test lists")
                         + ")" + (f"; it holds a {layout.name} one" if layout else ""))
    return layout


@dataclasses.dataclass(frozen=True)
class NnunetSource:
    """What the network to train comes from: plans, dataset.json, configuration, and the
    weights to start from (None: freshly initialised)."""

    plans: dict
    dataset: dict
    configuration: str
    state: dict | None
    described: str
    splits_file: Path | None


def nnunet_source(cfg: TrainConfig, layout: volume_layouts.VolumeLayout) -> NnunetSource:
    """The network source `cfg.init_from` names: an nnU-Net plans file (train from scratch;
    `--model configuration=NAME`), an nnU-Net trained-model folder (fold `cfg.fold`'s
    weights), or a unet-jax model or workdir of an nnU-Net network."""
    other = sorted(set(cfg.model) - {"configuration"})
    if other:
        raise ValueError(f"--model {', '.join(other)}: an nnU-Net network takes its options from the "
                         "plans; only configuration=NAME may be given")
    if not cfg.init_from:
        raise ValueError("training on volumes needs --init-from: an nnU-Net plans file (nnUNetPlans.json "
                         "from nnUNetv2_plan_experiment) to train from scratch, or an nnU-Net model "
                         "folder, converted fold or unet-jax workdir to fine-tune")
    path = Path(cfg.init_from)
    named = cfg.model.get("configuration")
    dataset = {"channel_names": layout.channels, "labels": layout.labels}
    if path.is_file() and path.suffix == ".json":
        plans = read_json(path)
        if "configurations" not in plans:
            raise ValueError(f"{path} is not nnU-Net plans (no 'configurations')")
        name = named or next((c for c in ("3d_fullres", "2d") if c in plans["configurations"]), None)
        return NnunetSource(plans, dataset, name or "", None, f"fresh {name} network of {path.name}",
                            path.parent / "splits_final.json")
    if is_nnunet_folder(path):
        found = read_fold(path, path / f"fold_{cfg.fold}")
        if found is None:
            folds = sorted({p.parent.name for p in path.glob("fold_*/checkpoint_*.pth")})
            raise ValueError(f"{path} has no fold_{cfg.fold} checkpoint (it has {', '.join(folds)}): "
                             "choose --fold")
        _, state, name = found
        return NnunetSource(read_json(path / "plans.json"), read_json(path / "dataset.json"), named or name,
                            state, f"{path} fold_{cfg.fold}", None)
    model = sources.load(path, which="latest")
    origin = nnunet_origin(model)
    return NnunetSource(origin["plans"], origin["dataset"], named or origin["configuration"],
                        to_torch_state_dict(model), str(path), None)


def training_network(source: NnunetSource, seed: int, dtype: str = "float32") -> nnx.Module:
    """The configuration's network with deep supervision, imported in training mode, its
    outputs coarsest first (the last is the prediction, as for every unet-jax model);
    parameters in `dtype` (float64 for checks)."""
    import torch
    torch.manual_seed(seed)
    module, entry = nnunet_network(source.plans, source.dataset, source.configuration,
                                   deep_supervision=True)
    module.to(getattr(torch, dtype))
    if source.state is not None:
        module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in source.state.items()},
                               strict=True)
    network_class = type(module)

    class CoarsestFirst(network_class):
        def forward(self, x):
            return list(reversed(network_class.forward(self, x)))

    CoarsestFirst.__name__ = CoarsestFirst.__qualname__ = network_class.__name__
    module.__class__ = CoarsestFirst  # the same state_dict names; torch.export traces this forward
    patch = tuple(entry["patch_size"])
    origin = {"kind": "nnunet", "configuration": source.configuration, "fold": "trained",
              "inference_allowed_mirroring_axes": list(range(len(patch))), "trainer": "unet-jax",
              "plans": source.plans, "dataset": source.dataset}
    example = torch.zeros(1, module_channels(source.dataset), *patch, dtype=getattr(torch, dtype))
    model = import_torch(module.train(), example, origin=origin)
    model.train()
    return recorded.record(model, "none", patch)


def setup(cfg: TrainConfig):
    """(cfg with nnU-Net's defaults filled in, model, lines saying how it was made, train
    patches, validation patches) for volume data."""
    layout = volume_layout(cfg.data)
    if layout.problems:
        raise ValueError(f"{cfg.data}: " + "; ".join(layout.problems[:10]))
    source = nnunet_source(cfg, layout)
    config = configuration(source.plans, source.configuration)
    check_supported(source.plans, config, source.configuration, training=True)
    ignored = [f"--{k.replace('_', '-')}" for k, unset in IMAGE_ONLY.items() if getattr(cfg, k) != unset]
    if ignored:
        raise ValueError(f"{', '.join(ignored)} do not apply to volumes: the patch size is the plans', "
                         "the augmentation nnU-Net's, and every case file is read before the first step")
    labels = {k: v for k, v in source.dataset["labels"].items() if k != "ignore"}
    if any(isinstance(v, list | tuple) and len(v) > 1 for v in labels.values()):
        raise ValueError("dataset.json defines regions: region-based training (nnU-Net's DC_and_BCE_loss) "
                         "is not reproduced; train with one label per class")
    if module_channels(source.dataset) != len(layout.channels):
        raise ValueError(f"the network takes {module_channels(source.dataset)} channels; {cfg.data} has "
                         f"{len(layout.channels)}")
    if dict(layout.labels) != dict(source.dataset["labels"]):
        raise ValueError(f"the network's labels {source.dataset['labels']} differ from {cfg.data}'s "
                         f"{layout.labels}")
    model = training_network(source, cfg.seed)
    patch = tuple(config["patch_size"])
    heads = len(outputs.heads(nnx.eval_shape(lambda: model(jnp.zeros((1, *patch, len(layout.channels)))))))
    if heads < 2:
        raise ValueError(f"the {source.configuration} network has {heads} output: nnU-Net's deep "
                         "supervision needs a network of at least two stages")
    given = cfg
    cfg = with_nnunet_defaults(cfg, config, segmentation_heads(source.dataset), heads)
    taken = [f"{k} {getattr(cfg, k)}" for k in (*NNUNET_DEFAULTS, "loss", "batch_size")
             if getattr(cfg, k) != getattr(given, k)]
    names = [case.name for case in layout.splits.get("train", [])]
    splits_file = source.splits_file or layout.root / "splits_final.json"
    train_names, val_names = split_of(names, cfg.fold, splits_file)
    foreground = sorted(int(v) for v in labels.values() if int(v) != 0)
    by_name = {case.name: case for case in layout.splits["train"]}
    cached = {c.name: c for c in prepare_cases([by_name[n] for n in train_names + val_names], source.plans,
                                               source.configuration, config, foreground, cfg.data_threads)}
    ignore = source.dataset["labels"].get("ignore")
    ignore = (int(ignore), cfg.ignore_index) if ignore is not None else None
    masked = tuple(i for i, m in enumerate(config["use_mask_for_norm"]) if m)
    augmentation = dataclasses.replace(VolumeAugmentation.for_patch(patch), mask_channels=masked)
    train = VolumePatches([cached[n] for n in train_names], patch, cfg.batch_size,
                          cfg.steps_per_epoch * cfg.batch_size, augmentation, seed=cfg.seed, ignore=ignore)
    # whole batches: a padded row's Dice would count as perfect in the validation loss
    val_samples = -(-cfg.val_samples // cfg.batch_size) * cfg.batch_size
    val = VolumePatches([cached[n] for n in val_names], patch, cfg.batch_size, val_samples, None,
                        seed=cfg.seed + 1, ignore=ignore)
    lines = [f"nnU-Net {source.configuration} network ({type(model).__name__} of "
             f"{config['architecture']['network_class_name'].rpartition('.')[2]}, {heads} heads), "
             f"patch {'x'.join(map(str, patch))}, from {source.described}",
             f"cases: {len(train_names)} train, {len(val_names)} validation (fold {cfg.fold}); "
             f"preprocessed in {cached[train_names[0]].data_file.parent}"]
    if taken:
        lines.append("nnU-Net's training defaults (options not given): " + ", ".join(taken))
    return cfg, model, lines, train, val


def with_nnunet_defaults(cfg: TrainConfig, config: dict, classes: int, heads: int) -> TrainConfig:
    """`cfg` with nnUNetTrainer's choices for the fields left at their defaults (and not in
    `cfg.given`, the command line's): SGD (lr 1e-2,
    momentum 0.99, Nesterov, weight decay 3e-5), poly per epoch, gradients clipped at 12,
    DC + CE (batch Dice as the plans say) over the heads with nnU-Net's weights, the plans'
    batch size (rounded up to the devices)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    filled = {k: v for k, v in NNUNET_DEFAULTS.items()
              if k not in cfg.given and getattr(cfg, k) == UNSET.get(k, defaults[k])}
    filled["arch"] = "imported"
    filled["num_classes"] = cfg.num_classes or classes
    filled["preprocess"] = cfg.preprocess or "none"  # the cases are normalised by the plans
    filled["loss"] = cfg.loss or ("dc_ce_batch" if config.get("batch_dice") else "dc_ce")
    filled["head_weights"] = cfg.head_weights or nnunet_head_weights(heads)
    if cfg.batch_size == 0:
        devices = jax.device_count()
        filled["batch_size"] = -(-int(config["batch_size"]) // devices) * devices
    return dataclasses.replace(cfg, **filled)
