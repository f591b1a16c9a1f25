"""CPU convolution algorithms chosen by measurement: `unet-jax tune` records an arch's shapes
for this CPU, a recorded shape runs its measured algorithms (same numbers), untuned shapes
run the policy's or are measured on first use, and a damaged file falls back to the policy."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax import ops
from unet_jax.cli.main import main
from unet_jax.kernels import cpu
from unet_jax.kernels.cpu import conv, tuning

pytestmark = pytest.mark.skipif(not cpu.enabled(), reason="the CPU kernels are off")


@pytest.fixture
def tuning_file(tmp_path, monkeypatch):
    path = tmp_path / "tuning.json"
    monkeypatch.setenv(tuning.ENV_FILE, str(path))
    return path


def _xla_conv_traced(x, k) -> bool:
    """Whether a conv2d traced now (a new function: no cached trace) holds XLA's convolution."""
    return "conv_general_dilated" in str(jax.make_jaxpr(lambda x, k: ops.conv2d(x, k, 1, 1))(x, k))


@pytest.mark.slow
def test_tune_records_every_conv_shape_of_an_arch(tuning_file, capsys, monkeypatch):
    monkeypatch.setattr(tuning, "REPEATS", 1)  # the timings' values are not under test
    assert main(["tune", "--arch", "imgseg_unet", "--size", "32", "--batch", "1",
                 "--model", "base_width=4"]) == 0
    entries = json.loads(tuning_file.read_text())[tuning.cpu_key()]
    keys = [k for k in entries if k.startswith("conv2d ")]
    assert len(keys) >= 8  # the encoder's, the decoder's and the head's distinct shapes
    for entry in entries.values():
        assert entry["times"].keys() >= {"xla", "tapwise"}
        assert entry["infer"] in entry["times"] and entry["train"] in entry["times"]
        assert all(t > 0 for pair in entry["times"].values() for t in pair)
    out = capsys.readouterr().out
    assert out.count("| x1x") == len(keys) and out.count("whole network") == 2
    kept = [line.rpartition("kept the ")[2] for line in out.splitlines() if "whole network" in line]
    assert set(kept) <= {"measured's", "policy's"}


def test_a_tuned_shape_runs_the_measured_algorithm_with_the_same_numbers(tuning_file):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 12, 12, 8)), jnp.float32)
    k = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 8, 8)), jnp.float32)
    assert conv.by_policy(x, k, stride=1, padding=1) == ("xla", "xla")  # small: XLA's conv
    assert _xla_conv_traced(x, k)
    plain = np.asarray(jax.jit(lambda x, k: ops.conv2d(x, k, 1, 1))(x, k))
    tuning.record({tuning.shape_key(x, k, 1, 1): {"infer": "winograd", "train": "winograd", "times": {}}})
    assert not _xla_conv_traced(x, k)  # Winograd's GEMMs instead
    tuned = np.asarray(jax.jit(lambda x, k: ops.conv2d(x, k, 1, 1))(x, k))
    np.testing.assert_allclose(tuned, plain, rtol=1e-5, atol=1e-4)
    tuning_file.write_text("{ not json")
    assert _xla_conv_traced(x, k)  # damaged: the policy again


def test_untuned_shapes_are_measured_on_first_use_when_asked(tuning_file, monkeypatch):
    x = jax.ShapeDtypeStruct((1, 10, 10, 4), jnp.float32)
    k = jax.ShapeDtypeStruct((3, 3, 4, 6), jnp.float32)
    jax.eval_shape(lambda x, k: ops.conv2d(x, k, 1, 1), x, k)
    assert not tuning_file.exists()  # off by default: the policy, nothing measured
    monkeypatch.setenv(tuning.ENV_MEASURE, "1")
    jax.eval_shape(lambda x, k: ops.conv2d(x, k, 1, 1), x, k)
    entry = json.loads(tuning_file.read_text())[tuning.cpu_key()][tuning.shape_key(x, k, 1, 1)]
    assert entry["times"].keys() == {"xla", "tapwise", "winograd", "winograd_xla_dx", "products"}
