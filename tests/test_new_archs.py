"""What the later archs bring beyond the shared parity matrix: smp save_pretrained folders in
and out, arch / config inference between look-alike checkpoints, milesial's bilinear variant,
odd sizes and mask_values, and the size errors."""

import json

import numpy as np
import pytest
import torch
from conftest import random_input
from PIL import Image
from safetensors.torch import save_file

import unet_jax
from unet_jax import registry
from unet_jax.cli import main
from unet_jax.convert.io import CheckpointError
from unet_jax.models import recorded
from unet_jax.parity import harness

FP32 = harness.TOLERANCE["float32"]


def _parity(ref, model, size, channels=3):
    x = random_input(*size, channels=channels)
    for d in harness.compare_outputs(harness.torch_forward(ref, x), harness.jax_forward(model, x)):
        assert d.max_rel <= FP32, d


def _save_pretrained(ref, config, folder, **extra):
    """A folder as smp's `save_pretrained` writes it (every constructor argument)."""
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, folder / "model.safetensors")
    cls = "UnetPlusPlus" if registry.arch_of_config(config).name == "smp_unetplusplus" else "Unet"
    values = {k: v for k, v in vars(config).items()}
    values["decoder_channels"] = list(values["decoder_channels"])
    (folder / "config.json").write_text(json.dumps(
        {"_model_class": cls, "activation": None, "aux_params": None, "encoder_weights": None,
         **values, **extra}, indent=2))


@pytest.mark.slow
def test_smp_save_pretrained_folder_loads_with_its_config_and_exports_back(tmp_path):
    config = registry.make_config("smp_unetplusplus", encoder_name="resnet34", encoder_depth=3,
                                  decoder_channels=(32, 16, 16), decoder_use_norm="identity",
                                  classes=2)
    ref = harness.random_reference(config, seed=1)
    # the older decoder_use_batchnorm, written too, wins over decoder_use_norm (as smp)
    _save_pretrained(ref, config, tmp_path / "hub", decoder_use_norm="batchnorm",
                     decoder_use_batchnorm=False, activation="sigmoid")
    model, report, _ = unet_jax.convert.api.load_torch_with_report(tmp_path / "hub")
    assert model.config == config
    assert any("activation 'sigmoid'" in n for n in report["notes"])
    _parity(ref, model, (32, 64))
    with pytest.raises(CheckpointError, match="describes a smp_unetplusplus model, not smp_unet"):
        unet_jax.load_torch(tmp_path / "hub", arch="smp_unet")

    unet_jax.save(model, tmp_path / "saved")
    assert main(["export", str(tmp_path / "saved"), "-o", str(tmp_path / "back")]) == 0
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["_model_class"] == "UnetPlusPlus" and written["decoder_use_norm"] == "identity"
    assert written["decoder_channels"] == [32, 16, 16]
    again = unet_jax.load_torch(tmp_path / "back")
    assert again.config == config
    original = unet_jax.to_torch_state_dict(model)
    assert all(np.array_equal(v, unet_jax.to_torch_state_dict(again)[k]) for k, v in original.items())


def test_smp_folder_whose_config_does_not_fit_its_weights_names_the_keys(tmp_path):
    """A folder whose config.json says FPN goes to the importer, which has smp build an FPN:
    Unet weights do not fit it, and the error says so key by key."""
    config = registry.make_config("smp_unet", encoder_name="resnet18", encoder_depth=3,
                                  decoder_channels=(32, 16, 16))
    _save_pretrained(harness.random_reference(config), config, tmp_path / "hub")
    data = json.loads((tmp_path / "hub" / "config.json").read_text())
    (tmp_path / "hub" / "config.json").write_text(json.dumps({**data, "_model_class": "FPN"}))
    with pytest.raises(CheckpointError, match=r"could not build .*FPN:\n *Missing key\(s\)"):
        unet_jax.load_torch(tmp_path / "hub")


@pytest.mark.parametrize("arch, kwargs", [
    ("smp_unet", dict(encoder_name="resnet18", encoder_depth=3, decoder_channels=(32, 16, 16))),
    ("smp_unet", dict(encoder_name="resnet34", encoder_depth=3, decoder_channels=(32, 16, 16))),
    ("smp_unet", dict(encoder_name="resnet50", encoder_depth=4, decoder_channels=(32, 16, 16, 16),
                      decoder_attention_type="scse", in_channels=1)),
    ("imgseg_unet", dict(base_width=4)), ("attu_net", dict(base_width=4)),
    ("r2u_net", dict(base_width=4)), ("r2attu_net", dict(base_width=4)),
    ("milesial_unet", dict(base_width=8, bilinear=True)),
    ("milesial_unet", dict(base_width=8, bilinear=False)),
])
def test_look_alike_checkpoints_are_told_apart(arch, kwargs):
    """resnet18 vs 34 by block count, plain vs attention vs recurrent U-Nets by their keys,
    milesial's two upsamplings; every config field read off the keys and shapes."""
    config = registry.make_config(arch, **kwargs)
    state = {k: v.numpy() for k, v in harness.random_reference(config).state_dict().items()}
    assert unet_jax.convert.api.infer_arch({k: v.shape for k, v in state.items()}) == \
        (registry.get_arch(arch), config)


def test_smp_unet_takes_odd_sizes_and_unetplusplus_names_the_valid_ones():
    config = registry.make_config("smp_unet", encoder_name="resnet18", encoder_depth=5, classes=2)
    ref = harness.random_reference(config, seed=2)
    model = unet_jax.load_torch({k: v.numpy() for k, v in ref.state_dict().items()})
    _parity(ref, model, (37, 45))
    pp = unet_jax.create_model("smp_unetplusplus", encoder_name="resnet18", encoder_depth=4,
                               decoder_channels=(32, 16, 16, 16))
    with pytest.raises(ValueError, match=r"divisible by 16, got 40x50: the nearest valid sizes "
                                         r"are H 32 or 48, W 48 or 64"):
        pp(np.zeros((1, 40, 50, 3), np.float32))


def test_milesial_checkpoint_mask_values_reach_the_predicted_masks(tmp_path):
    """milesial's train.py saves `mask_values` beside the tensors; predict maps classes back
    to them (as its predict.py) and the saved model keeps them."""
    config = registry.make_config("milesial_unet", base_width=8, n_classes=3, bilinear=True)
    ref = harness.random_reference(config, seed=3)
    state = dict(ref.state_dict(), mask_values=[0, 128, 255])
    torch.save(state, tmp_path / "checkpoint_epoch5.pth")
    model = unet_jax.load_torch(tmp_path / "checkpoint_epoch5.pth")
    assert recorded.mask_values(model) == [0, 128, 255]
    _parity(ref, model, (37, 45))
    assert main(["convert", str(tmp_path / "checkpoint_epoch5.pth"), "-o", str(tmp_path / "saved"),
                 "--no-verify"]) == 0
    assert recorded.mask_values(unet_jax.load(tmp_path / "saved")) == [0, 128, 255]
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 45, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "saved"), str(tmp_path / "a.png"), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    ids = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    values = np.asarray(Image.open(tmp_path / "out" / "a_mask.png"))
    np.testing.assert_array_equal(values, np.array([0, 128, 255], np.uint8)[ids])
