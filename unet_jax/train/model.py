"""The model to train: options filled in from the arch and the init_from model, fresh or
fine-tuned (`unet_jax.train.finetune`)."""

import dataclasses

import jax
from flax import nnx

from unet_jax import registry
from unet_jax.checkpoints.sources import open_model
from unet_jax.convert.api import create_model
from unet_jax.models import recorded
from unet_jax.train.config import DEFAULT_ARCH, DEFAULT_CLASSES, TrainConfig
from unet_jax.train.finetune import adapt, adaptable_names


def resolve(cfg: TrainConfig) -> tuple[TrainConfig, nnx.Module | None]:
    """`cfg` with every "from the arch / from init_from" default filled in, and the init_from
    model (read once here, as it decides the arch and class count)."""
    source = None
    if cfg.init_from:
        # options the weights cannot show (deep_supervision, ...) apply to the source itself
        fixed = {k: v for k, v in cfg.model.items() if k not in adaptable_names()}
        source = open_model(cfg.init_from, cfg.arch or None, **fixed)[0]
    arch = cfg.arch or (registry.arch_of_config(source.config).name if source else DEFAULT_ARCH)
    spec = registry.get_arch(arch)
    num_classes = cfg.num_classes or (
        registry.uniform_option(source, "num_classes") if source else DEFAULT_CLASSES)
    arch_defaults = registry.train_defaults(arch)
    filled = dict(arch=arch, num_classes=num_classes,
                  preprocess=cfg.preprocess or (recorded.preset_of(source) if source else spec.preprocess))
    for name, unset in (("image_size", 0), ("lr", 0.0), ("warmup_epochs", -1.0), ("loss", "")):
        if getattr(cfg, name) == unset:
            filled[name] = arch_defaults[name]
    if cfg.batch_size == 0:  # the arch's, rounded up to split evenly over the devices
        devices = jax.device_count()
        filled["batch_size"] = -(-arch_defaults["batch_size"] // devices) * devices
    return dataclasses.replace(cfg, **filled), source


def make_model(cfg: TrainConfig, source: nnx.Module | None = None) -> tuple[nnx.Module, list[str]]:
    """The model to train (in training mode) and lines saying how it was initialised.

    From `source` (the init_from model), its config with `cfg.model` and `num_classes`
    applied: changed classes or input channels re-initialise exactly the layers they
    reshape; any other change is refused. Otherwise freshly initialised, seeded."""
    options = dict(cfg.model, num_classes=cfg.num_classes)
    if source is None:
        if cfg.backbone_weights:
            options["backbone_weights"] = cfg.backbone_weights
        model = create_model(cfg.arch, seed=cfg.seed, **options)
        model.train()
        return recorded.record(model, cfg.preprocess, (cfg.image_size,) * 2), []
    spec = registry.arch_of_config(source.config)
    options = {spec.uniform.get(k, k): v for k, v in options.items()}
    adaptable = adaptable_names(spec)
    differs = {k: (getattr(source.config, k, None), v) for k, v in options.items()
               if k not in adaptable and getattr(source.config, k, None) != v}
    if differs:
        raise ValueError(f"--model options differ from the init_from model {cfg.init_from} "
                         + ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in differs.items())
                         + "; these change its weights' shapes (only num_classes / in_channels "
                         "can be changed by fine-tuning)")
    model, lines = adapt(source, seed=cfg.seed,
                         **{k: v for k, v in options.items() if k in adaptable})
    model.train()
    return (recorded.record(model, cfg.preprocess, (cfg.image_size,) * 2),
            [f"initialised from {cfg.init_from}"] + lines)


def backbone_names(model: nnx.Module) -> tuple[str, ...]:
    """The top-level attribute holding the pretrained backbone (what upstream freezes)."""
    spec = registry.arch_of_config(model.config).backbone
    return (spec.attribute,) if spec else ()
