"""One module per upstream; importing this package registers every arch."""

from unet_jax.models import (  # noqa: F401
    bubbliiiing_unet,
    imgseg_unet,
    imported,
    labml_unet,
    milesial_unet,
    semseg_unet,
    smp_unet,
    unetpp,
)
