import ast
from pathlib import Path

import pytest
from conftest import FULL, SMALL

import unet_jax
from unet_jax.parity.references import REFERENCES


def test_every_arch_has_a_reference_and_parity_tests():
    archs = set(unet_jax.list_models())
    assert archs == {"semseg_unet", "labml_unet", "imgseg_unet", "unetpp", "vgg16_unet",
                     "resnet50_unet"} | archs  # the six seeds at least
    assert archs <= set(REFERENCES)
    assert archs <= set(SMALL) and archs <= set(FULL)
    tree = ast.parse((Path(__file__).parent / "test_parity.py").read_text())
    tests = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert {"test_parity_small", "test_parity_upstream_widths"} <= tests


def test_create_model_takes_upstream_and_uniform_names():
    a = unet_jax.create_model("semseg_unet", n_classes=5, feature_scale=16)
    b = unet_jax.create_model("semseg_unet", num_classes=5, feature_scale=16)
    assert a.config == b.config and a.config.n_classes == 5
    c = unet_jax.create_model("imgseg_unet", in_channels=1, base_width=8)
    assert c.config.img_ch == 1


def test_unknown_arch_and_option_are_named():
    with pytest.raises(ValueError, match="unknown arch 'unet3'.*imgseg_unet"):
        unet_jax.create_model("unet3")
    with pytest.raises(TypeError, match="has no option 'n_classes'.*num_classes"):
        unet_jax.create_model("unetpp", n_classes=3)


def test_semseg_bilinear_is_rejected_with_the_upstream_reason():
    with pytest.raises(ValueError, match="is_deconv=False is broken upstream"):
        unet_jax.create_model("semseg_unet", is_deconv=False)
