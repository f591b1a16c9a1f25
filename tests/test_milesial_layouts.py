"""milesial/Pytorch-UNet's two checkpoint layouts: since v3.0 (commit 514f18e, still so at
21d7850) `DoubleConv`'s convs have `bias=False`; v1.0 / v2.0 checkpoints carry the 18 conv
biases. Both load from files written as each version's train.py writes them, are told apart
by their keys, match torch in fp32 and fp64 with weights far from the defaults, and export
back bit-exact with the same key set."""

import json
import re

import jax
import numpy as np
import pytest
import torch
from conftest import random_input

import unet_jax
from unet_jax import registry
from unet_jax.models import recorded
from unet_jax.parity import harness

FP32, FP64 = harness.TOLERANCE["float32"], harness.TOLERANCE["float64"]
CONV_BIAS = re.compile(r".*double_conv\.[03]\.bias")  # the keys 514f18e removed
LAYOUTS = {"v3+": False, "v1/v2": True}  # layout -> conv_bias
MASK_VALUES = [0, 127, 255]


def _reference(conv_bias: bool, bilinear: bool, seed: int = 0):
    """(config, torch reference in eval mode) with every weight far from torch's defaults
    (`harness.randomize_weights`: He-scaled convs, conv biases where the layout has them,
    random BatchNorm affine parameters and running statistics)."""
    config = registry.make_config("milesial_unet", base_width=8, n_classes=3, bilinear=bilinear,
                                  conv_bias=conv_bias)
    module = harness.reference_for(config)
    harness.randomize_weights(module, seed)
    return config, module.eval()


def _save_as_train_py(module: torch.nn.Module, path, conv_bias: bool) -> None:
    """v1.0 / v2.0 train.py: `torch.save(net.state_dict(), ...)`; 21d7850 train.py adds the
    dataset's `mask_values` to the state_dict before saving it."""
    state = module.state_dict()
    if not conv_bias:
        state["mask_values"] = MASK_VALUES
    torch.save(state, path)


def _outputs(module, model, x):
    return harness.compare_outputs(harness.torch_forward(module, x), harness.jax_forward(model, x))


def test_upstream_layouts_differ_by_the_18_double_conv_biases():
    """The reference at 21d7850 (default) and v2.0 (conv_bias=True), upstream widths."""
    from unet_jax.parity.references.milesial import UNet
    head, v2 = UNet(3, 2).state_dict(), UNet(3, 2, conv_bias=True).state_dict()
    assert not any(CONV_BIAS.fullmatch(k) for k in head)
    extra = sorted(set(v2) - set(head))
    assert len(extra) == 18 and all(CONV_BIAS.fullmatch(k) for k in extra) and set(head) < set(v2)
    assert "outc.conv.bias" in head and "up1.up.bias" in head  # OutConv and ConvTranspose2d keep theirs
    assert registry.make_config("milesial_unet").conv_bias is False  # create_model builds 21d7850's


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_train_py_checkpoints_load_infer_match_and_export_back(layout, bilinear, tmp_path):
    conv_bias = LAYOUTS[layout]
    config, module = _reference(conv_bias, bilinear, seed=1)
    _save_as_train_py(module, tmp_path / "checkpoint_epoch2.pth", conv_bias)
    model = unet_jax.load_torch(tmp_path / "checkpoint_epoch2.pth")
    assert model.config == config  # conv_bias and bilinear read off the keys
    assert recorded.mask_values(model) == (None if conv_bias else MASK_VALUES)
    for h, w in [(32, 32), (37, 45)]:
        for d in _outputs(module, model, random_input(h, w)):
            assert d.max_rel <= FP32, (layout, (h, w), d)
    exported = unet_jax.to_torch_state_dict(model)
    torch_state = module.state_dict()
    assert set(exported) == set(torch_state) and len(exported) == len(torch_state)
    for key, value in torch_state.items():
        expected = value.numpy()
        assert exported[key].dtype == expected.dtype and np.array_equal(exported[key], expected), key
    fresh = harness.reference_for(config)
    fresh.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in exported.items()},
                          strict=True)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_float64_parity_of_both_layouts(layout):
    config, module = _reference(LAYOUTS[layout], bilinear=False, seed=2)
    module = module.double()
    with jax.enable_x64(True):
        model = unet_jax.load_torch(module.state_dict(), dtype=np.float64)
        assert model.config == config
        for d in _outputs(module, model, random_input(37, 45, dtype=np.float64)):
            assert d.max_rel <= FP64, (layout, d)


def test_a_mixed_or_mislabelled_checkpoint_names_every_bias_key():
    """Inference looks at `inc`'s first conv; any other key out of line is a strict error."""
    _, head = _reference(False, bilinear=False)
    _, v2 = _reference(True, bilinear=False)
    mixed = {k: v.numpy() for k, v in head.state_dict().items()}
    mixed["inc.double_conv.0.bias"] = v2.state_dict()["inc.double_conv.0.bias"].numpy()
    with pytest.raises(unet_jax.ConversionError, match="17 missing, 0 unexpected") as e:
        unet_jax.load_torch(mixed)
    missing = sorted(k.split()[0] for k in e.value.missing)  # entries read 'key (shape)'
    assert missing == sorted(
        k for k in v2.state_dict() if CONV_BIAS.fullmatch(k) and k != "inc.double_conv.0.bias")
    with pytest.raises(unet_jax.ConversionError, match="0 missing, 18 unexpected"):
        unet_jax.load_torch({k: v.numpy() for k, v in v2.state_dict().items()},
                            arch="milesial_unet", conv_bias=False)


def test_a_saved_model_lacking_conv_bias_in_its_config_is_the_biased_layout(tmp_path):
    """unet-jax models saved before `conv_bias` existed were built with the conv biases: a
    stored config without the field means conv_bias=True (MilesialUNetConfig.MISSING_MEANS)."""
    config, module = _reference(True, bilinear=False, seed=3)
    model = unet_jax.load_torch(module.state_dict())
    unet_jax.save(model, tmp_path / "saved")
    meta_path = tmp_path / "saved" / "unet_jax.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["conv_bias"]
    meta_path.write_text(json.dumps(meta))
    loaded = unet_jax.load(tmp_path / "saved")
    assert loaded.config == config
    x = random_input(37, 45)
    np.testing.assert_array_equal(harness.jax_forward(loaded, x)[0], harness.jax_forward(model, x)[0])


def test_a_workdir_written_before_conv_bias_resumes_only_with_the_biased_layout(tmp_path):
    """run.json of a workdir written before `conv_bias` existed lacks the field: resuming with
    the biased model is the same run, the bias-free one is another model."""
    from unet_jax.checkpoints.workdir import claim_workdir
    from unet_jax.train import TrainConfig
    cfg = TrainConfig(arch="milesial_unet", workdir=str(tmp_path), image_size=32)
    biased = unet_jax.create_model("milesial_unet", base_width=4, n_classes=2, conv_bias=True)
    claim_workdir(tmp_path, cfg, biased)
    run = json.loads((tmp_path / "run.json").read_text())
    del run["config"]["conv_bias"]
    (tmp_path / "run.json").write_text(json.dumps(run))
    claim_workdir(tmp_path, cfg, biased)
    bias_free = unet_jax.create_model("milesial_unet", base_width=4, n_classes=2)
    with pytest.raises(ValueError, match="holds a run of another model"):
        claim_workdir(tmp_path, cfg, bias_free)
