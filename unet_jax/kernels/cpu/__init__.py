"""CPU-only algorithms and settings, behind one switch.

`unet_jax.ops` asks `choose` for a CPU algorithm at trace time and runs it under
`jax.lax.platform_dependent(cpu=...)`, so programs lowered for GPU/TPU never hold it.
`UNET_JAX_CPU_KERNELS=0` turns every CPU algorithm, compiler option and host-memory setting
off (read when a function is traced): then the CPU runs the accelerators' program.
"""

import os

from unet_jax.kernels.cpu import conv, pool, resample, transposed

ENV = "UNET_JAX_CPU_KERNELS"
_CHOOSERS = {"conv2d": conv.choose, "conv_transpose2d": transposed.choose,
             "max_pool": pool.choose, "upsample_bilinear2": resample.choose}


def enabled() -> bool:
    """False when `UNET_JAX_CPU_KERNELS=0`."""
    return os.environ.get(ENV, "1") != "0"


def choose(op: str, plain, *operands, **static):
    """The CPU algorithm for `plain(*operands)`, op `op` with these static arguments, or None
    where XLA:CPU's own (the plain op) is the one to use."""
    return _CHOOSERS[op](plain, *operands, **static)
