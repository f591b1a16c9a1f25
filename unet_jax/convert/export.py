"""Flax model -> torch state_dict, through its arch's key map."""

import numpy as np
from flax import nnx

from unet_jax import registry
from unet_jax.convert.engine import export_state


def to_torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """{torch key: np.ndarray}; loads into the upstream torch model with strict=True."""
    arch = registry.arch_of_config(model.config)
    return export_state(model, arch.key_map(model.config))
