"""The training and inference programs exported with `jax.export` for any platform, from
any machine: what a GPU or TPU runs, as StableHLO text to read and count."""

import re

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import train as train_lib


def _spec(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))


def export_train_step(cfg: "train_lib.TrainConfig", model: nnx.Module, optimizer: nnx.Optimizer,
                      batch: int, size: tuple[int, int], platforms: tuple[str, ...]):
    """The full train step of `cfg` (forward, loss, backward, optimizer update) with model
    and optimizer state donated, for uint8 images (batch, *size, C) and uint8 masks."""
    train_step, _ = train_lib.step_functions(cfg)
    graphdef, state = nnx.split((model, optimizer))

    def step(state, images, labels):
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, images, labels)
        return nnx.state((model, optimizer)), loss

    channels = model.config.__dict__.get("in_channels") or _in_channels(model)
    return jax.export.export(jax.jit(step, donate_argnums=0), platforms=platforms)(
        state, _spec((batch, *size, channels), jnp.uint8), _spec((batch, *size), jnp.uint8))


def export_eval_forward(model: nnx.Module, batch: int, size: tuple[int, int],
                        platforms: tuple[str, ...], dtype="float32"):
    """`model(x)` in eval mode for float inputs (batch, *size, C) in `dtype`."""
    graphdef, state = nnx.split(model)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    x = _spec((batch, *size, _in_channels(model)), dtype)
    return jax.export.export(jax.jit(forward), platforms=platforms)(state, x)


def _in_channels(model: nnx.Module) -> int:
    from unet_jax import registry
    spec = registry.arch_of_config(model.config)
    return getattr(model.config, spec.uniform["in_channels"])


_OP = re.compile(r"= (stablehlo\.[a-z_]+)")
_TYPE = r"tensor<(?:\d+x)*([a-z]\w*)>"
_CONV = re.compile(rf"stablehlo\.convolution\(.*:\s*\({_TYPE}, {_TYPE}\)\s*->\s*{_TYPE}")


def op_counts(text: str) -> dict[str, int]:
    """{StableHLO op name: occurrences} in a module's text."""
    counts: dict[str, int] = {}
    for name in _OP.findall(text):
        counts[name] = counts.get(name, 0) + 1
    return counts


def convolutions(text: str) -> list[tuple[str, str]]:
    """(lhs, rhs, result) element types of every `stablehlo.convolution`."""
    return _CONV.findall(text)
