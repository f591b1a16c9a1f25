"""Torch references with the upstream key layout, one factory per registered arch."""

import dataclasses

from unet_jax.parity.references import bubbliiiing, imgseg, labml, milesial, semseg, smp, unetpp


def _kwargs(config) -> dict:
    return dataclasses.asdict(config)


REFERENCES = {
    "semseg_unet": lambda c: semseg.unet(**_kwargs(c)),
    "labml_unet": lambda c: labml.UNet(**_kwargs(c)),
    "imgseg_unet": lambda c: imgseg.U_Net(**_kwargs(c)),
    "attu_net": lambda c: imgseg.AttU_Net(**_kwargs(c)),
    "r2u_net": lambda c: imgseg.R2U_Net(**_kwargs(c)),
    "r2attu_net": lambda c: imgseg.R2AttU_Net(**_kwargs(c)),
    "milesial_unet": lambda c: milesial.UNet(**_kwargs(c)),
    "smp_unet": lambda c: smp.Unet(**_kwargs(c)),
    "smp_unetplusplus": lambda c: smp.UnetPlusPlus(**_kwargs(c)),
    "unetpp": lambda c: unetpp.UnetPlusPlus(**_kwargs(c)),
    "vgg16_unet": lambda c: bubbliiiing.Unet(backbone="vgg", **_kwargs(c)),
    "resnet50_unet": lambda c: bubbliiiing.Unet(backbone="resnet50", **_kwargs(c)),
}
