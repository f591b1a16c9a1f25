"""Torch-semantics layers, NHWC: every torch quirk the models depend on lives here once.
They compute with `unet_jax.ops` (plain `jax.lax` on every backend)."""

from unet_jax.nn.checks import check_divisible, check_input
from unet_jax.nn.conv import Conv2d, ConvTranspose2d
from unet_jax.nn.crop import center_crop, crop_like_semseg, pad_to, require_same_size
from unet_jax.nn.gate import gate
from unet_jax.nn.norm import BatchNorm
from unet_jax.nn.pool import max_pool2, max_pool3_s2_ceil, max_pool3_s2_pad1
from unet_jax.nn.resample import resize_nearest, upsample_bilinear2, upsample_nearest2

__all__ = ["BatchNorm", "Conv2d", "ConvTranspose2d", "center_crop", "check_divisible", "check_input",
           "crop_like_semseg", "gate", "max_pool2", "max_pool3_s2_ceil", "max_pool3_s2_pad1",
           "pad_to", "require_same_size",
           "resize_nearest", "upsample_bilinear2", "upsample_nearest2"]
