"""One module per arch; importing this package registers them all."""

from unet_jax.models import bubbliiiing_unet, imgseg_unet, labml_unet, semseg_unet, unetpp  # noqa: F401
