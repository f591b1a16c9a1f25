"""`jit` for inference (eval-mode forward passes): the model as a pytree, and on CPU the
compiler options the CPU kernels measured for inference."""

import functools

import jax
from flax import nnx

from unet_jax.kernels import cpu
from unet_jax.kernels.cpu.compiler import INFERENCE_OPTIONS


def _require_eval_mode(fn_name: str, model):
    for path, node in nnx.iter_graph(model):
        if getattr(node, "use_running_average", True) is False:
            raise ValueError(f"{fn_name} runs models in eval mode, but the BatchNorm at "
                             f"{'.'.join(map(str, path))} is in training mode: call model.eval() "
                             "first (its statistics updates would be lost)")


class inference_jit:  # noqa: N801 (a decorator, like nnx.jit)
    """`fn(model, *args)` jit-compiled with the model as a pytree (no per-call graph
    traversal, unlike `nnx.jit`) and, on CPU with the CPU kernels enabled, with
    `INFERENCE_OPTIONS`. The model must be in eval mode; it is only read."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)

        @functools.wraps(fn)
        def traced(model, *args):
            _require_eval_mode(fn.__name__, model)  # runs once per compilation
            return fn(model, *args)

        self._cpu = jax.jit(traced, compiler_options=INFERENCE_OPTIONS)
        self._plain = jax.jit(traced)

    def _jitted(self):
        return self._cpu if cpu.enabled() else self._plain

    def __call__(self, model, *args):
        return self._jitted()(model, *args)

    def lower(self, model, *args):
        return self._jitted().lower(model, *args)
