"""Imported networks as the arch "imported": any torch module `unet_jax.import_torch` traced,
its graph stored in the config (versioned data), its state_dict keys its key map."""

import numpy as np

from unet_jax import registry
from unet_jax.models import keymap
from unet_jax.models.imported import graph
from unet_jax.models.imported.net import ImportedConfig, ImportedNet, flax_path

ARCH = "imported"


def _held(entry: graph.StateEntry) -> keymap.Transform:
    """torch's array <-> the model's: the entry's layout; integers back in torch's dtype."""
    perm = entry.permutation
    back = tuple(int(i) for i in np.argsort(perm))
    dtype = None if np.dtype(entry.dtype).kind == "f" else entry.dtype
    if perm == back == tuple(range(len(perm))) and dtype is None:
        return keymap.IDENTITY
    return keymap.Transform(f"{entry.layout} {entry.dtype}", lambda a: a.transpose(perm),
                            lambda a: (a if dtype is None else a.astype(dtype)).transpose(back))


def key_map(config: ImportedConfig) -> list[keymap.Rule]:
    """Every state_dict entry <-> the variable of the same name, in the entry's layout (the
    other names of a tensor the module shares under several names as its aliases)."""
    return [keymap.Rule(e.name, flax_path(e.name),
                        _held(e), optional=e.name.endswith("num_batches_tracked"), aliases=e.aliases)
            for e in graph.parse(config.graph).state if e.kind != "constant"]


registry.register(registry.Arch(
    name=ARCH, model=ImportedNet, config=ImportedConfig, key_map=key_map,
    infer=lambda shapes: None, uniform={"num_classes": "num_classes", "in_channels": "in_channels"},
    source="any torch module, through torch.export (unet_jax.import_torch)",
    sizes=registry.SizeRule(step=1, minimum=1), listed=False))
