"""The `unet-jax` command line (`unet_jax.cli.main`)."""

from unet_jax.cli.main import main

__all__ = ["main"]
