"""Bad input gets a clear error naming the problem; nothing silently wrong."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import SMALL

import unet_jax
from unet_jax import registry
from unet_jax.parity import harness


@pytest.fixture(scope="module")
def imgseg_sd():
    config = registry.make_config("imgseg_unet", **SMALL["imgseg_unet"][0])
    return {k: v.numpy() for k, v in harness.random_reference(config).state_dict().items()}


def test_wrong_arch_names_the_keys_and_the_likely_arch(imgseg_sd):
    with pytest.raises(unet_jax.ConversionError) as e:
        unet_jax.load_torch(imgseg_sd, arch="labml_unet")
    msg = str(e.value)
    assert "its keys look like a imgseg_unet checkpoint" in msg
    assert "- in model, not in checkpoint:" in msg and "down_conv.0.first.weight" in msg
    assert "+ in checkpoint, not in model:" in msg and "Conv1.conv.0.weight" in msg


def test_shape_mismatch_names_the_key(imgseg_sd):
    sd = dict(imgseg_sd, **{"Conv_1x1.weight": np.zeros((2, 9, 1, 1), np.float32)})
    with pytest.raises(unet_jax.ConversionError,
                       match=r"Conv_1x1.weight: checkpoint \(2, 9, 1, 1\), model expects \(2, 8, 1, 1\)"):
        unet_jax.load_torch(sd, arch="imgseg_unet")


def test_missing_and_unexpected_keys_are_all_listed(imgseg_sd):
    sd = dict(imgseg_sd)
    del sd["Up3.up.1.bias"], sd["Conv2.conv.4.running_var"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(unet_jax.ConversionError) as e:
        unet_jax.load_torch(sd)
    assert e.value.missing == ["Conv2.conv.4.running_var (16,)", "Up3.up.1.bias (16,)"]
    assert e.value.unexpected == ["extra.weight (3,)"]
    model = unet_jax.load_torch(sd, strict=False)  # keeps initial values, skips the extra key
    np.testing.assert_array_equal(model.Conv1.conv1.conv.bias[...], imgseg_sd["Conv1.conv.0.bias"])


def test_missing_num_batches_tracked_is_allowed(imgseg_sd):
    sd = {k: v for k, v in imgseg_sd.items() if not k.endswith("num_batches_tracked")}
    assert int(unet_jax.load_torch(sd).Conv1.conv1.bn.num_batches_tracked[...]) == 0


def test_wrappers_and_module_prefix_are_unwrapped(imgseg_sd, tmp_path):
    tensors = {k: torch.from_numpy(v) for k, v in imgseg_sd.items()}
    for i, obj in enumerate(({"state_dict": tensors}, {"model": tensors},
                             {"model_state_dict": tensors, "epoch": 3},
                             {f"module.{k}": v for k, v in tensors.items()})):
        torch.save(obj, tmp_path / f"w{i}.pt")
        model = unet_jax.load_torch(tmp_path / f"w{i}.pt")
        np.testing.assert_array_equal(model.Conv_1x1.bias[...], imgseg_sd["Conv_1x1.bias"])


def test_truncated_file(imgseg_sd, tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({k: torch.from_numpy(v) for k, v in imgseg_sd.items()}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(unet_jax.CheckpointError, match="cut.pth is truncated or not a torch"):
        unet_jax.load_torch(path)
    st = tmp_path / "cut.safetensors"
    st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(unet_jax.CheckpointError, match="cut.safetensors is truncated or not a safetensors"):
        unet_jax.load_torch(st)


@pytest.mark.parametrize("arch, size, valid", [
    ("semseg_unet", (189, 189), "188 \\+ 16k"),
    ("semseg_unet", (196, 196), "188 \\+ 16k"),
    ("semseg_unet", (188, 196), "188 \\+ 16k"),
    ("imgseg_unet", (40, 40), "multiples of 16"),
    ("unetpp", (24, 32), "multiples of 16"),
    ("vgg16_unet", (40, 40), "multiples of 16"),
    ("resnet50_unet", (48, 48), "multiples of 32"),
])
def test_unsupported_input_sizes_state_the_valid_ones(arch, size, valid):
    model = unet_jax.create_model(arch, **SMALL[arch][0])
    with pytest.raises(ValueError, match=f"input size not supported.*{valid}"):
        model(jnp.zeros((1, *size, 3)))


def test_nchw_input_is_named():
    model = unet_jax.create_model("imgseg_unet", base_width=8)
    with pytest.raises(ValueError, match="expects NHWC input with 3 channels.*NCHW"):
        model(jnp.zeros((1, 3, 32, 32)))
