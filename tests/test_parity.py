"""Torch reference (random weights, random BatchNorm statistics) saved to a real file,
loaded through `unet_jax.load_torch`, outputs compared at the stated tolerance."""

import jax
import numpy as np
import pytest
import torch
from conftest import FULL, SMALL, random_input
from flax import nnx
from safetensors.torch import save_file

import unet_jax
from unet_jax import registry
from unet_jax.kernels import cpu
from unet_jax.parity import harness

FP32 = harness.TOLERANCE["float32"]


def _save(module: torch.nn.Module, path) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path)
    else:
        torch.save(module.state_dict(), path)


def _ds(config) -> dict:
    """Deep supervision is not stored in the weights: pass it as the user would."""
    return {"deep_supervision": True} if getattr(config, "deep_supervision", False) else {}


def _assert_parity(ref, model, sizes, tol, dtype=np.float32):
    for h, w in sizes:
        x = random_input(h, w, dtype=dtype)
        diffs = harness.compare_outputs(harness.torch_forward(ref, x), harness.jax_forward(model, x))
        for d in diffs:
            assert d.max_rel <= tol, f"{(h, w)} {d}"


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(SMALL))
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_parity_small(arch, suffix, tmp_path):
    kwargs, sizes = SMALL[arch]
    config = registry.make_config(arch, **kwargs)
    ref = harness.random_reference(config, seed=1)
    path = tmp_path / f"ckpt{suffix}"
    _save(ref, path)
    inferred = unet_jax.load_torch(path, **_ds(config))
    assert inferred.config == config
    _assert_parity(ref, inferred, sizes, FP32)
    explicit = unet_jax.load_torch(path, arch=arch, **_ds(config))
    _assert_parity(ref, explicit, sizes[:1], FP32)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(FULL))
def test_parity_upstream_widths(arch, tmp_path):
    kwargs, size = FULL[arch]
    config = registry.make_config(arch, **kwargs)
    ref = harness.random_reference(config, seed=2)
    torch.save(ref.state_dict(), tmp_path / "full.pth")
    model = unet_jax.load_torch(tmp_path / "full.pth", **_ds(config))
    assert model.config == config
    _assert_parity(ref, model, [size], FP32)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_export_round_trip_is_bit_exact(arch):
    config = registry.make_config(arch, **SMALL[arch][0])
    ref = harness.random_reference(config, seed=3)
    original = {k: v.numpy() for k, v in ref.state_dict().items()}
    exported = unet_jax.to_torch_state_dict(unet_jax.load_torch(original, **_ds(config)))
    assert list(exported) and set(exported) == set(original)
    for k, v in original.items():
        assert exported[k].dtype == v.dtype and exported[k].shape == v.shape, k
        np.testing.assert_array_equal(exported[k], v, err_msg=k)
    fresh = harness.reference_for(config)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    x = random_input(*SMALL[arch][1][0])
    for a, b in zip(harness.torch_forward(ref, x), harness.torch_forward(fresh.eval(), x)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(SMALL))
def test_float64_parity_with_weights_far_from_defaults(arch):
    """Every arch in float64 with every weight and statistic far from torch's defaults
    (`harness.randomize_weights`): outputs within 1e-10 of max(1, max|torch|) at both sizes,
    so a semantic difference too small for the fp32 tolerance still fails."""
    kwargs, sizes = SMALL[arch]
    config = registry.make_config(arch, **kwargs)
    torch.manual_seed(4)
    ref = harness.reference_for(config).double()
    harness.randomize_weights(ref, seed=4)
    ref.eval()
    with jax.enable_x64(True):
        model = unet_jax.load_torch(ref.state_dict(), dtype=np.float64, **_ds(config))
        assert {a.dtype for a in jax.tree.leaves(nnx.state(model, nnx.Param))} == {np.dtype(np.float64)}
        _assert_parity(ref, model, sizes, harness.TOLERANCE["float64"], np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(SMALL))
def test_parity_of_the_accelerator_program_on_cpu(arch, monkeypatch):
    """With the CPU kernels off this machine runs the plain `jax.lax` program GPUs and TPUs
    run: fp32 at both sizes within the fp32 tolerance, fp64 within the fp64 one."""
    monkeypatch.setenv(cpu.ENV, "0")
    kwargs, sizes = SMALL[arch]
    config = registry.make_config(arch, **kwargs)
    ref = harness.random_reference(config, seed=6)
    _assert_parity(ref, unet_jax.load_torch(ref.state_dict(), **_ds(config)), sizes, FP32)
    with jax.enable_x64(True):
        ref = ref.double()
        model = unet_jax.load_torch(ref.state_dict(), dtype=np.float64, **_ds(config))
        _assert_parity(ref, model, sizes[1:], harness.TOLERANCE["float64"], np.float64)


def test_tolerance_catches_swapped_batchnorm_statistics():
    """The random statistics make a mean/var swap fail the fp32 tolerance."""
    config = registry.make_config("imgseg_unet", **SMALL["imgseg_unet"][0])
    ref = harness.random_reference(config, seed=5)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    sd["Conv1.conv.1.running_mean"], sd["Conv1.conv.1.running_var"] = (
        sd["Conv1.conv.1.running_var"], sd["Conv1.conv.1.running_mean"])
    x = random_input(32, 32)
    d = harness.compare_outputs(harness.torch_forward(ref, x),
                                harness.jax_forward(unet_jax.load_torch(sd), x))[0]
    assert d.max_rel > 100 * FP32


def test_labml_loads_the_seed_spelling_and_exports_it_back():
    config = registry.make_config("labml_unet", base_width=8, seed_spelling=True)
    ref = harness.random_reference(config, seed=6)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    assert any(k.startswith("middel_conv.") for k in sd)
    model = unet_jax.load_torch(sd)
    assert model.config.seed_spelling
    assert set(unet_jax.to_torch_state_dict(model)) == set(sd)
    _assert_parity(ref, model, [(32, 48)], FP32)


@pytest.mark.parametrize("variant", [dict(nearest_upsampling=True), dict(up_relu=False)])
def test_bubbliiiing_variants(variant):
    config = registry.make_config("resnet50_unet", num_classes=3, **variant)
    ref = harness.random_reference(config, seed=7)
    model = unet_jax.load_torch(ref.state_dict(), **variant)
    _assert_parity(ref, model, [(64, 64)], FP32)


def test_per_layer_report_locates_the_first_diverging_layer():
    config = registry.make_config("imgseg_unet", **SMALL["imgseg_unet"][0])
    ref = harness.random_reference(config, seed=8)
    model = unet_jax.load_torch(ref.state_dict())
    x = random_input(32, 32)
    outputs, layers = harness.compare(ref, model, x)
    assert outputs[0].max_rel <= FP32
    assert len(layers) == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))
                              for m in ref.modules())
    assert max(d.max_rel for d in layers) <= FP32
    model.Up3.up.bn.mean[...] = model.Up3.up.bn.mean[...] + 1.0  # break one layer
    first_bad = next(d for d in harness.compare(ref, model, x)[1] if d.max_rel > FP32)
    assert first_bad.name == "Up3.up.2"
