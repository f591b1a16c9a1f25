"""Model sources and fine-tuning.

Anything a model can come from — a torch checkpoint file, a mapping of tensors, a saved
unet-jax model, a training workdir — opens through `open_model`. `adapt` turns a model into
one with another class count or input channels, re-initialising exactly the layers whose
shapes change (the head; the first conv for channels), as fine-tuning needs.
"""

import dataclasses
import os
from collections.abc import Mapping

from flax import nnx

from unet_jax import presets, registry, saving
from unet_jax.convert.api import load_torch_with_report, to_torch_state_dict

ADAPTABLE = ("num_classes", "in_channels")  # the options fine-tuning may change


def adaptable_names(arch: registry.Arch | None = None) -> set[str]:
    """The option names fine-tuning may change: uniform and upstream, of `arch` or any arch."""
    archs = [arch] if arch else registry.all_archs()
    return {n for a in archs for k in ADAPTABLE for n in (k, a.uniform[k])}


def open_model(source: str | os.PathLike | Mapping, arch: str | None = None, *,
               which: str = "best", dtype=None, **config):
    """(model in eval mode, report, torch state_dict) from any model source.

    Torch files and smp `save_pretrained` folders are read as they are; saved models and
    training workdirs (`which` picks a workdir's "best" or "latest" checkpoint) are exported
    to a state_dict and loaded like a torch file, so every source gets the same checks,
    `dtype` and report; the report's "notes" say what was read. `saving.source_kind` tells
    them apart.
    """
    if isinstance(source, Mapping) or saving.source_kind(source) in ("torch", "smp"):
        return load_torch_with_report(source, arch, dtype=dtype, **config)
    saved, info = saving.load_with_info(source, arch=arch, which=which)
    spec = registry.arch_of_config(saved.config)
    options = {**dataclasses.asdict(saved.config), **config}
    model, report, state = load_torch_with_report(to_torch_state_dict(saved), spec.name,
                                                  dtype=dtype, **options)
    presets.carry_over(saved, model)
    report["notes"].insert(0, info)
    return model, report, state


def adapt(model: nnx.Module, *, seed: int = 0, **changes) -> tuple[nnx.Module, list[str]]:
    """`model` with other `num_classes` / `in_channels` (uniform or upstream names), and one
    line per re-initialised layer. Layers whose shapes stay keep their weights; a layer any
    of whose tensors changes shape is re-initialised as a whole (seeded)."""
    arch = registry.arch_of_config(model.config)
    upstream = {arch.uniform.get(k, k): v for k, v in changes.items()}
    other = sorted(set(upstream) - adaptable_names(arch))
    if other:
        raise ValueError(f"fine-tuning can change {', '.join(ADAPTABLE)} only, not "
                         f"{', '.join(other)}: the weights of {arch.name} depend on them")
    target = dataclasses.replace(model.config, **upstream)
    if target == model.config:
        return model, []
    old = to_torch_state_dict(model)
    new = to_torch_state_dict(registry.build(target, seed=seed))
    layer = lambda key: key.rsplit(".", 1)[0]  # noqa: E731
    fresh = {layer(k) for k, v in new.items() if k not in old or old[k].shape != v.shape}
    merged = {k: (v if layer(k) in fresh else old[k]) for k, v in new.items()}
    lines = []
    for name in sorted(fresh):
        shapes = ", ".join(f"{k.rsplit('.', 1)[-1]} {old[k].shape if k in old else '-'} -> "
                           f"{v.shape}" for k, v in new.items()
                           if layer(k) == name and not k.endswith("num_batches_tracked"))
        lines.append(f"re-initialised {name} ({shapes})")
    adapted, _, _ = load_torch_with_report(merged, arch.name, **dataclasses.asdict(target))
    return presets.carry_over(model, adapted), lines

