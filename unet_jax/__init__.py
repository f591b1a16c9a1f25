"""unet-jax: the U-Net family in Flax NNX with exact PyTorch weight parity."""

from unet_jax import models  # noqa: F401  (registers the archs)
from unet_jax.checkpoints.saved import ModelSourceError, save
from unet_jax.checkpoints.sources import load
from unet_jax.convert.api import (
                                  CheckpointError,
                                  ConversionError,
                                  create_model,
                                  load_nnunet,
                                  load_torch,
                                  to_torch_state_dict,
)
from unet_jax.convert.smp_hub import save_pretrained
from unet_jax.convert.torch_export import import_torch
from unet_jax.inference.prediction import predict
from unet_jax.registry import list_models

__all__ = ["CheckpointError", "ConversionError", "ModelSourceError", "create_model", "import_torch",
           "list_models", "load", "load_nnunet", "load_torch", "predict", "save", "save_pretrained",
           "to_torch_state_dict"]
__version__ = "0.1.0"
