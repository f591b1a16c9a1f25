"""Pre-tuning the CPU convolutions of an arch: its train step's and inference's conv shapes
collected by tracing them, each measured (`unet_jax.kernels.cpu.tuning`) and recorded for
this machine, so the first real run compiles the fastest algorithms without measuring."""

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import registry
from unet_jax.convert.api import create_model
from unet_jax.kernels import cpu
from unet_jax.kernels.cpu import conv, tuning
from unet_jax.models import outputs


def conv_shapes(arch: str, size: int, batch: int, dtype: str = "float32", **options) -> list[tuple]:
    """The distinct (x, k, stride, padding) of every conv2d the arch's forward and gradient
    trace at batch x size x size (the arch's nearest valid size) in `dtype`."""
    if not cpu.enabled():
        raise ValueError("the CPU kernels are off (UNET_JAX_CPU_KERNELS=0, or JAX does not run on the "
                         "CPU): there is nothing to tune")
    model = create_model(arch, **options)
    model.train()
    side = registry.get_arch(arch).sizes.nearest(size)
    channels = registry.uniform_option(model, "in_channels")
    x = jax.ShapeDtypeStruct((batch, side, side, channels), jnp.dtype(dtype))

    def gradient(model, x):  # as a train step differentiates (BatchNorm statistics updated)
        return nnx.grad(lambda m: jnp.sum(outputs.last_head(m(x)).astype(jnp.float32) ** 2))(model)

    with tuning.recording() as seen:
        nnx.eval_shape(gradient, model, x)
    distinct = {}
    for entry in seen:
        x_, k_, stride, padding = entry
        distinct.setdefault(tuning.shape_key(x_, k_, stride, padding), entry)
    return list(distinct.values())


def tune(arch: str, size: int, batch: int, dtype: str = "float32", **options):
    """Measure every conv shape of the arch not yet tuned on this machine and record it;
    yields (shape key, entry, the policy's (forward, differentiated) names) per shape."""
    known = tuning.tuned()
    for x, k, stride, padding in conv_shapes(arch, size, batch, dtype, **options):
        key = tuning.shape_key(x, k, stride, padding)
        plain = lambda a, b, s=stride, p=padding: conv.xla_conv(a, b, s, p)  # noqa: E731
        entry = known.get(key) or tuning.measure(conv.candidates(plain, x, k, stride, padding), x, k)
        if key not in known:
            tuning.record({key: entry})
        yield key, entry, conv.by_policy(x, k, stride=stride, padding=padding)
