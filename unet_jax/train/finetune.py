"""Fine-tuning: a model with another class count or input channels, re-initialising exactly
the layers whose shapes change (the head; the first conv for channels)."""

import dataclasses

from flax import nnx

from unet_jax import registry
from unet_jax.convert.api import load_torch_with_report
from unet_jax.convert.export import to_torch_state_dict
from unet_jax.models import build, recorded

ADAPTABLE = ("num_classes", "in_channels")  # the options fine-tuning may change


def adaptable_names(arch: registry.Arch | None = None) -> set[str]:
    """The option names fine-tuning may change: uniform and upstream, of `arch` or any arch."""
    archs = [arch] if arch else registry.all_archs()
    return {n for a in archs for k in ADAPTABLE for n in (k, a.uniform[k])}



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
    if not arch.listed:
        raise ValueError("an imported network keeps the class count and input channels of its "
                         "torch module: change the head (or first layer) in torch and import it "
                         f"again ({', '.join(f'{k} {v}' for k, v in changes.items())} asked)")
    old = to_torch_state_dict(model)
    new = to_torch_state_dict(build.build(target, seed=seed))
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
    return recorded.carry_over(model, adapted), lines

