"""The training and inference programs lowered for any platform from any machine: what a
GPU or TPU runs, as StableHLO text to read and count. Traced once with the CPU kernels off
(as a GPU/TPU host traces them), lowered per platform as `jax.export` does."""

import dataclasses
import re

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.kernels import cpu
from unet_jax.train import config as train_config
from unet_jax.train import steps as train_steps


def _spec(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))


@dataclasses.dataclass(frozen=True)
class Program:
    """A traced function's argument and result types and its StableHLO per platform."""

    in_avals: tuple
    out_avals: tuple
    text: dict[str, str]


def _lower(jitted, args, platforms) -> Program:
    with cpu.disabled():
        traced = jitted.trace(*args)
    return Program(tuple(traced.jaxpr.in_avals), tuple(traced.jaxpr.out_avals),
                   {p: traced.lower(lowering_platforms=(p,)).as_text() for p in platforms})


def lower_train_step(cfg: train_config.TrainConfig, model: nnx.Module, optimizer: nnx.Optimizer,
                     batch: int, size: tuple[int, int], platforms: tuple[str, ...]) -> Program:
    """The full train step of `cfg` (forward, loss, backward, optimizer update) with model
    and optimizer state donated, for uint8 images (batch, *size, C) and uint8 masks."""
    train_step, _ = train_steps.step_functions(cfg)
    graphdef, state = nnx.split((model, optimizer))

    def step(state, images, labels):
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, images, labels)
        return nnx.state((model, optimizer)), loss

    images = _spec((batch, *size, _in_channels(model)), jnp.uint8)
    return _lower(jax.jit(step, donate_argnums=0), (state, images, _spec((batch, *size), jnp.uint8)),
                  platforms)


def lower_eval_forward(model: nnx.Module, batch: int, size: tuple[int, int],
                       platforms: tuple[str, ...], dtype="float32") -> Program:
    """`model(x)` in eval mode for float inputs (batch, *size, C) in `dtype`."""
    graphdef, state = nnx.split(model)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    x = _spec((batch, *size, _in_channels(model)), dtype)
    return _lower(jax.jit(forward), (state, x), platforms)


def _in_channels(model: nnx.Module) -> int:
    return registry.uniform_option(model, "in_channels")


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


_SUM = re.compile(r"stablehlo\.reduce\(.*applies stablehlo\.add across dimensions = \[([\d, ]*)\]"
                  r" : \(tensor<([\dx]*)([a-z]\w*)>")


def sums(text: str) -> list[tuple[str, int]]:
    """(element type, terms summed into each output) of every add-reduction."""
    found = []
    for dims, shape, dtype in _SUM.findall(text):
        sizes = [int(d) for d in shape.split("x") if d]
        terms = 1
        for d in dims.split(","):
            terms *= sizes[int(d)]
        found.append((dtype, terms))
    return found
