"""Training, in the big_vision spirit: `loop.train` reads straight through and wires small
modules (config, setup, inputs, model, optimizer, steps, preflight, the workdir's
checkpoints in `unet_jax.checkpoints.workdir`)."""

from unet_jax.train.config import TrainConfig
from unet_jax.train.inputs import make_datasets
from unet_jax.train.loop import train
from unet_jax.train.nonfinite import NonFiniteLossError

__all__ = ["NonFiniteLossError", "TrainConfig", "make_datasets", "train"]
