"""Convolution algorithms chosen by measurement on the machine that runs them.

For a conv2d shape (input, kernel, dtype, stride, padding) every applicable candidate
(XLA's own convolution, the tap-GEMM kernel gradient, Winograd with or without its input
gradient, broadcast products) is compiled and timed in isolation, once for the forward pass
alone and once for the forward with both gradients; the fastest of each is kept in a JSON
file keyed by this CPU (model, ISA flags, core count) and the JAX version, beside the
compilation cache. A shape the file holds runs its measured algorithms; any other runs the
thresholds of `policy` (measured on one processor), unless `UNET_JAX_CPU_TUNE=1`, which
measures it on first use (at trace time, outside the traced program).
`unet-jax tune` measures an arch's shapes ahead of time.
"""

import contextlib
import functools
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import atomic

ENV_FILE = "UNET_JAX_CPU_TUNING"  # the tuning file ("": none read or written)
ENV_MEASURE = "UNET_JAX_CPU_TUNE"  # "1": measure untuned shapes on first use
DEFAULT_FILE = os.path.join(os.path.expanduser("~"), ".cache", "unet_jax", "cpu_tuning.json")
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "fma")
REPEATS = 5


def cpu_key() -> str:
    """This CPU and JAX: "model name | ISA flags | cores | jax version"."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                model = value.strip()
            elif name.strip() == "flags":
                flags = set(value.split())
    isa = "+".join(f for f in ISA_FLAGS if f in flags) or "-"
    return f"{model} | {isa} | {os.cpu_count()} cores | jax {jax.__version__}"


def tuning_file() -> Path | None:
    path = os.environ.get(ENV_FILE, DEFAULT_FILE)
    return Path(path) if path else None


@functools.lru_cache(maxsize=1)
def _read(path: Path | None, stamp: float) -> dict:
    """The file's entries for this CPU ({shape key: {"infer": name, "train": name, ...}})."""
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get(cpu_key(), {})
    except (OSError, ValueError):
        return {}  # a damaged file tunes nothing: the policy applies


_TRIAL: dict | None = None  # entries tried instead of the file's (`trying`)


def tuned() -> dict:
    if _TRIAL is not None:
        return _TRIAL
    path = tuning_file()
    stamp = path.stat().st_mtime_ns if path is not None and path.is_file() else 0
    return _read(path, stamp)


@contextlib.contextmanager
def trying(entries: dict):
    """Trace with `entries` as the tuned shapes (and no others), not the file's."""
    global _TRIAL
    before, _TRIAL = _TRIAL, entries
    try:
        yield
    finally:
        _TRIAL = before


def record(entries: dict) -> None:
    """Add `entries` for this CPU to the tuning file (written whole, then renamed)."""
    path = tuning_file()
    if path is None:
        return
    data = {}
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
    data.setdefault(cpu_key(), {}).update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def shape_key(x, k, stride: int, padding: int) -> str:
    return (f"conv2d x{'x'.join(map(str, x.shape))} k{'x'.join(map(str, k.shape))} "
            f"{jnp.dtype(x.dtype).name} s{stride} p{padding}")


_SEEN: list | None = None  # shapes asked for while `recording`


@contextlib.contextmanager
def recording():
    """Collect the (x, k, stride, padding) of every conv2d traced inside (as abstract shapes)."""
    global _SEEN
    before, _SEEN = _SEEN, []
    try:
        yield _SEEN
    finally:
        _SEEN = before


def note(x, k, stride: int, padding: int) -> None:
    if _SEEN is not None:
        _SEEN.append((jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                      stride, padding))


def median_seconds(fn, *args) -> float:
    """Median seconds of `fn(*args)` after one warm-up call (compilation)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(candidates: dict, x, k) -> dict:
    """{"infer": fastest forward, "train": fastest forward + both gradients, "times": {name:
    [infer s, train s]}} of `candidates` ({name: conv(x, k)}) on random arrays of these shapes."""
    rng = np.random.default_rng(0)
    with jax.ensure_compile_time_eval():
        xs = jnp.asarray(rng.normal(size=x.shape), x.dtype)
        ks = jnp.asarray(rng.normal(size=k.shape) * 0.1, k.dtype)
        times = {}
        for name, conv in candidates.items():
            forward = jax.jit(conv)
            train = jax.jit(jax.grad(lambda a, b, conv=conv: jnp.sum(conv(a, b) ** 2), argnums=(0, 1)))
            times[name] = [median_seconds(forward, xs, ks), median_seconds(train, xs, ks)]
    return {"infer": min(times, key=lambda n: times[n][0]),
            "train": min(times, key=lambda n: times[n][1]),
            "times": {n: [round(a, 6), round(b, 6)] for n, (a, b) in times.items()}}


def measuring_on_first_use() -> bool:
    return os.environ.get(ENV_MEASURE, "0") == "1"
