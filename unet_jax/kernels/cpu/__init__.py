"""CPU-only algorithms and settings, behind one switch.

`unet_jax.ops` asks `choose` for a CPU algorithm at trace time, where JAX's default backend
is the CPU; on a GPU/TPU host nothing of it is even traced, and programs lowered for them
from a CPU host are traced inside `disabled()`.
`UNET_JAX_CPU_KERNELS=0` turns every CPU algorithm, compiler option and host-memory setting
off (read when a function is traced; a function already compiled keeps its program): then
the CPU runs the accelerators' program.
"""

import contextlib
import os

import jax

from unet_jax.kernels.cpu import conv, conv3d, pool, resample, transposed

ENV = "UNET_JAX_CPU_KERNELS"
_CHOOSERS = {"conv2d": conv.choose, "conv_transpose2d": transposed.choose,
             "conv_transpose_taps": transposed.choose_taps, "conv3d": conv3d.choose,
             "max_pool": pool.choose, "upsample_bilinear2": resample.choose}


def switched_on() -> bool:
    """False when `UNET_JAX_CPU_KERNELS=0` (readable before JAX starts)."""
    return os.environ.get(ENV, "1") != "0"


def enabled() -> bool:
    """Switched on, and JAX's default backend is the CPU."""
    return switched_on() and jax.default_backend() == "cpu"


def choose(op: str, plain, *operands, **static):
    """The CPU algorithm for `plain(*operands)`, op `op` with these static arguments, or None
    where XLA:CPU's own (the plain op) is the one to use."""
    return _CHOOSERS[op](plain, *operands, **static)


@contextlib.contextmanager
def disabled():
    """Trace with the CPU kernels off (a program for another platform)."""
    before = os.environ.get(ENV)
    os.environ[ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = before
