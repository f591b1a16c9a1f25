"""Pretrained encoders: torchvision ImageNet files (`vgg16-397923af.pth`,
`resnet18-f37072fd.pth`, `resnet34-b627a593.pth`, `resnet50-19c8e357.pth`, ...) into the
encoder an arch declares (`registry.Backbone`)."""

import os
from collections.abc import Mapping

from flax import nnx

from unet_jax import registry
from unet_jax.convert.engine import load_into
from unet_jax.convert.io import read_state_dict

# Prefixes a backbone file may carry: smp encoders, wrappers, or our own attribute names.
PREFIXES = ("encoder.", "model.", "module.", "backbone.", "vgg.", "resnet.")
# Classifier heads of ImageNet files: deliberately unused.
IGNORED = (r"fc\..*", r"classifier\..*")


def load_backbone(model: nnx.Module, source: str | os.PathLike | Mapping) -> dict[str, list[str]]:
    """Replace `model`'s pretrained encoder with the weights of a torchvision ImageNet file
    (VGG16 `features.*`; ResNet `conv1`, `bn1`, `layer1..4`), also under smp `encoder.` or
    `model.` / `module.` prefixes. `fc.*` and `classifier.*` are ignored; strict otherwise.
    Returns the report of keys."""
    arch = registry.arch_of_config(model.config)
    spec = arch.backbone
    if spec is None:
        takes = [a.name for a in registry.all_archs() if a.backbone is not None]
        raise ValueError(f"{arch.name} has no pretrained backbone; ImageNet backbone weights "
                         f"apply to {', '.join(takes)}")
    checkpoint = read_state_dict(source)
    state = checkpoint.tensors
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    network = spec.network(model.config)
    backbone, report = load_into(lambda: spec.module(model.config, nnx.Rngs(0)),
                                 spec.key_map(model.config), state,
                                 target=f"the {network} encoder of {arch.name}",
                                 source=checkpoint.label, ignore=IGNORED)
    if any(getattr(m, "use_running_average", False) for _, m in nnx.iter_modules(model)):
        backbone.eval()  # keep the model's mode
    setattr(model, spec.attribute, backbone)
    return report
