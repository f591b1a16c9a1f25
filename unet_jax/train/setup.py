"""Processes and devices: multi-host start-up, the data mesh, global batches and read-backs."""

import jax
import numpy as np
from jax.sharding import NamedSharding

from unet_jax.train.config import TrainConfig


def maybe_initialize_distributed(cfg: TrainConfig) -> None:
    """jax.distributed.initialize from the flags, or from the environment when set there."""
    if cfg.coordinator or cfg.num_processes:
        if jax.config.jax_platforms in (None, "", "cpu"):  # CPU collectives across processes
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(cfg.coordinator or None, cfg.num_processes or None,
                                   None if cfg.process_id < 0 else cfg.process_id)


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D "data" mesh over every device of every process, sharded automatically by jit."""
    return jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated array's value, also when other processes hold parts of it."""
    return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))


def global_batch(local: dict, sharding: NamedSharding) -> tuple[jax.Array, jax.Array]:
    """This process's rows of the global batch (uint8 images, masks), assembled into global
    sharded arrays; the transfer is asynchronous, so it overlaps the step running."""
    return (jax.make_array_from_process_local_data(sharding, local["image"]),
            jax.make_array_from_process_local_data(sharding, local["mask"]))
