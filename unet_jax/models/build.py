"""Building a model from its config, freshly initialised and seeded (`unet_jax.create_model`
adds pretrained encoder weights)."""

import dataclasses

import jax
from flax import nnx

from unet_jax import registry
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
