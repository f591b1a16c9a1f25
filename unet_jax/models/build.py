"""Building models from configs: `build` (fresh, seeded) and the public `create_model`."""

import dataclasses

import jax
from flax import nnx

from unet_jax import registry
from unet_jax.convert.backbones import load_backbone
from unet_jax.kernels import cpu
from unet_jax.kernels.cpu.compiler import INIT_OPTIONS


def build(config, *, seed: int = 0) -> nnx.Module:
    """The model described by `config` (any registered config type), freshly initialised
    by one compiled program (op by op, every parameter shape would compile its own)."""
    arch = registry.arch_of_config(config)

    def make():
        return arch.model(**dataclasses.asdict(config), rngs=nnx.Rngs(seed))

    graphdef, _ = nnx.split(nnx.eval_shape(make))
    options = INIT_OPTIONS if cpu.enabled() else None
    try:
        state = jax.jit(lambda: nnx.split(make())[1], compiler_options=options)()
    except ValueError as e:  # inside a trace (e.g. nnx.eval_shape): nothing is compiled here
        if "compiler_options" not in str(e):
            raise
        return make()
    return nnx.merge(graphdef, state)


def create_model(name: str, *, seed: int = 0, backbone_weights=None, **kwargs) -> nnx.Module:
    """A freshly initialised model, in training mode like a new torch module.

    `kwargs` are the upstream constructor arguments, or the uniform `num_classes` /
    `in_channels`. `backbone_weights`: a torchvision ImageNet file for the encoder of an
    arch with a pretrained backbone (vgg16_unet, resnet50_unet, smp_unet,
    smp_unetplusplus; see `unet_jax.convert.backbones.load_backbone`).
    """
    model = build(registry.make_config(name, **kwargs), seed=seed)
    if backbone_weights is not None:
        load_backbone(model, backbone_weights)
    return model
