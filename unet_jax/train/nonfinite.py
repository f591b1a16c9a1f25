"""Non-finite losses, gradients and parameters: the check and the error that stops training."""

from pathlib import Path

import jax
import jax.numpy as jnp

from unet_jax.checkpoints.workdir import WHICH


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every floating value in `tree` is finite (one device-side reduction)."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class NonFiniteLossError(RuntimeError):
    """Training stopped at a non-finite loss or gradient; the bad state was not saved."""

    def __init__(self, first_bad: tuple[int, float], last_good: int | None, workdir: Path,
                 what: str = ""):
        step, value = first_bad
        kept = (f"the last good checkpoint, step {last_good} in {workdir / WHICH['latest']}, "
                "is kept" if last_good is not None else "no checkpoint had been saved yet")
        what = what or f"the loss is {value}"
        super().__init__(f"step {step}: {what} (a non-finite loss or gradient); "
                         f"training stopped and nothing after step {step - 1} was saved; {kept}. "
                         "Lower --lr, clip with --clip-norm, or skip such steps with "
                         "--on-nonfinite skip")
