"""Shared fixtures: small configs of every arch and random inputs."""

import os

import numpy as np
import pytest

# The suite runs the policy's CPU algorithms, whatever a developer's machine has tuned
# (tests/test_cpu_tuning.py points this at its own files).
os.environ["UNET_JAX_CPU_TUNING"] = ""

# Small widths for most tests; each entry: (config kwargs, two input sizes, one non-square).
SMALL = {
    "semseg_unet": (dict(feature_scale=16, n_classes=3), [(188, 188), (204, 188)]),
    "labml_unet": (dict(base_width=8, out_channels=3), [(64, 64), (45, 37)]),
    "imgseg_unet": (dict(base_width=8, output_ch=2), [(32, 32), (48, 32)]),
    "unetpp": (dict(base_width=8, num_classes=3, deep_supervision=True), [(32, 32), (32, 48)]),
    "vgg16_unet": (dict(num_classes=4), [(32, 32), (48, 32)]),
    "resnet50_unet": (dict(num_classes=4), [(64, 64), (64, 96)]),
    "attu_net": (dict(base_width=8, output_ch=2), [(32, 32), (48, 32)]),
    "r2u_net": (dict(base_width=8, output_ch=2), [(32, 32), (32, 48)]),
    "r2attu_net": (dict(base_width=8, output_ch=3), [(32, 32), (48, 32)]),
    "milesial_unet": (dict(base_width=8, n_classes=3), [(32, 32), (37, 45)]),
    "smp_unet": (dict(encoder_name="resnet18", encoder_depth=4, decoder_channels=(32, 32, 16, 16),
                      classes=3, decoder_attention_type="scse"), [(64, 64), (37, 45)]),
    "smp_unetplusplus": (dict(encoder_name="resnet18", encoder_depth=3, decoder_channels=(32, 16, 16),
                              classes=2), [(32, 32), (32, 64)]),
}
# Upstream default widths, one input each (the smallest sensible size keeps CI fast).
FULL = {
    "semseg_unet": (dict(feature_scale=4, n_classes=21), (188, 204)),
    "labml_unet": (dict(in_channels=3, out_channels=1), (48, 48)),
    "imgseg_unet": (dict(img_ch=3, output_ch=1), (32, 48)),
    "unetpp": (dict(num_classes=2, deep_supervision=True), (32, 32)),
    "vgg16_unet": (dict(num_classes=21), (64, 48)),
    "resnet50_unet": (dict(num_classes=21), (64, 64)),
    "attu_net": (dict(img_ch=3, output_ch=1), (32, 32)),
    "r2u_net": (dict(img_ch=3, output_ch=1), (32, 32)),
    "r2attu_net": (dict(img_ch=3, output_ch=1), (32, 32)),
    "milesial_unet": (dict(n_channels=3, n_classes=2, bilinear=True), (37, 45)),
    "smp_unet": (dict(encoder_name="resnet34", classes=2), (64, 64)),
    "smp_unetplusplus": (dict(encoder_name="resnet50", classes=2), (64, 64)),
}


def random_input(h: int, w: int, channels: int = 3, batch: int = 2, seed: int = 0,
                 dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, h, w, channels)).astype(dtype)


@pytest.fixture
def rng_input():
    return random_input
