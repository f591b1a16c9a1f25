"""Keep freed host memory mapped in the process (glibc), for XLA:CPU's per-execution buffers.

XLA:CPU mallocs each execution's temp buffer (132 MB for a semseg_unet train step at batch 2,
1.4 GB for resnet50_unet) from its own threads. glibc serves a request over 64 MB made off the
main thread with fresh `mmap` pages and unmaps them on free, so every step faults all of them
in again and the kernel zeroes them: 34,000 page faults and 75 ms of kernel time per
semseg_unet step. One arena, no `mmap` and no trimming keep the pages after the first step;
the price is that the process keeps its peak heap until it exits. Called by the command-line
entry points before JAX starts, only where JAX will run on the CPU (no GPU/TPU plugin
installed, or `JAX_PLATFORMS=cpu`), never with `UNET_JAX_CPU_KERNELS=0` or
`UNET_JAX_KEEP_FREED_MEMORY=0`; importing the library never does.
"""

import ctypes
import importlib.metadata
import os
import sys

from unet_jax.kernels import cpu

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc malloc.h
# A trim threshold of -1 disables trimming: any finite one (at most 2 GB, mallopt takes an
# int) returns a larger freed temp buffer (vgg16_unet's is 2.2 GB) to the kernel every step.
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
OPT_OUT = "UNET_JAX_KEEP_FREED_MEMORY"


ACCELERATOR_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm60-plugin",
                       "jax-rocm7-plugin", "libtpu", "libtpu-nightly")


def runs_on_cpu_only() -> bool:
    """Whether JAX will pick the CPU, decided without starting JAX: `JAX_PLATFORMS` names
    only cpu, or no GPU/TPU plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.strip() == "cpu"
    for name in ACCELERATOR_PLUGINS:
        try:
            importlib.metadata.distribution(name)
            return False
        except importlib.metadata.PackageNotFoundError:
            continue
    return True


def keep_freed_memory() -> bool:
    """Apply `SETTINGS` with glibc's `mallopt`; False where that is not possible (not Linux,
    another C library), JAX will use an accelerator, or the user opted out."""
    if (os.environ.get(OPT_OUT, "1") == "0" or not cpu.switched_on()
            or not sys.platform.startswith("linux") or not runs_on_cpu_only()):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
