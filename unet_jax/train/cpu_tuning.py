"""Pre-tuning the CPU convolutions of an arch: its train step's and inference's conv shapes
collected by tracing them, each measured alone (`unet_jax.kernels.cpu.tuning`), then the
whole network's forward and gradient timed with the measured choices against the policy's,
and for each of the two the faster set recorded for this machine: a conv that wins alone
can lose inside a network (fusion, memory traffic), so only the whole-network winner counts."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from unet_jax import registry
from unet_jax.convert.api import create_model
from unet_jax.kernels import cpu
from unet_jax.kernels.cpu import conv, tuning
from unet_jax.models import outputs


def conv_shapes(model, x) -> list[tuple]:
    """The distinct (x, k, stride, padding) of every conv2d the model's forward and gradient
    trace for input `x` (an array or its shape and dtype)."""
    with tuning.recording() as seen:  # as a train step differentiates (BatchNorm statistics updated)
        nnx.eval_shape(lambda m, x: nnx.grad(_loss)(m, x), model, x)
    distinct = {}
    for entry in seen:
        x_, k_, stride, padding = entry
        distinct.setdefault(tuning.shape_key(x_, k_, stride, padding), entry)
    return list(distinct.values())


def tune(arch: str, size: int, batch: int, dtype: str = "float32", **options) -> dict:
    """Measure the arch's conv shapes on this machine and record, for the forward pass and
    for the gradient, the measured choices or the policy's, whichever runs the whole network
    faster. Returns {"shapes": [(key, entry, policy names)], "network": {mode: {"measured": s,
    "policy": s}}, "kept": {mode: "measured" | "policy"}}."""
    model, x = _network(arch, size, batch, dtype, **options)
    shapes = []
    for xs, k, stride, padding in conv_shapes(model, x):
        key = tuning.shape_key(xs, k, stride, padding)
        plain = lambda a, b, s=stride, p=padding: conv.xla_conv(a, b, s, p)  # noqa: E731
        entry = tuning.measure(conv.candidates(plain, xs, k, stride, padding), xs, k)
        shapes.append((key, entry, conv.by_policy(xs, k, stride=stride, padding=padding)))
    measured = {key: entry for key, entry, _ in shapes}
    by_policy = {key: dict(entry, infer=p[0], train=p[1]) for key, entry, p in shapes}
    network = {}
    for mode, timer in (("infer", _forward_time), ("train", _gradient_time)):
        network[mode] = {}
        for name, entries in (("measured", measured), ("policy", by_policy)):
            with tuning.trying(entries):
                network[mode][name] = timer(model, x)
    kept = {mode: min(times, key=times.get) for mode, times in network.items()}
    chosen = {key: dict(entry, infer=(entry if kept["infer"] == "measured" else by_policy[key])["infer"],
                        train=(entry if kept["train"] == "measured" else by_policy[key])["train"])
              for key, entry in measured.items()}
    tuning.record(chosen)
    return {"shapes": shapes, "network": network, "kept": kept}


def _network(arch: str, size: int, batch: int, dtype: str, **options):
    """The arch in training mode and a random input batch x size x size (its nearest valid size)."""
    if not cpu.enabled():
        raise ValueError("the CPU kernels are off (UNET_JAX_CPU_KERNELS=0, or JAX does not run on the "
                         "CPU): there is nothing to tune")
    model = create_model(arch, **options)
    model.train()
    side = registry.get_arch(arch).sizes.nearest(size)
    channels = registry.uniform_option(model, "in_channels")
    x = np.random.default_rng(0).normal(size=(batch, side, side, channels))
    return model, jnp.asarray(x, jnp.dtype(dtype))


def _loss(model, x):
    return jnp.sum(outputs.last_head(model(x)).astype(jnp.float32) ** 2)


def _forward_time(model, x) -> float:
    model.eval()
    forward = nnx.jit(lambda m, x: outputs.last_head(m(x)))  # traced now: the entries in force
    seconds = tuning.median_seconds(forward, model, x)
    model.train()
    return seconds


def _gradient_time(model, x) -> float:
    gradient = nnx.jit(lambda m, x: nnx.grad(_loss)(m, x))
    return tuning.median_seconds(gradient, model, x)
