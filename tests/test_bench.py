"""The bench's table, JSON and argument checks (timing runs themselves are benchmarks, not
tests: see README, Benchmarks)."""

import argparse
import json

import pytest

from unet_jax.cli import bench as bench_cli
from unet_jax.parity import bench


def row(arch="unetpp", **extra):
    return bench.Row(arch, 2, (256, 256), "fp32", 2.0, 4.0, 0.5, 8.0, 10.0, 0.8, 20.0, 50.0,
                     1024.0, device="cpu x1", versions="jax X, torch Y", **extra)


def test_table_has_ratios_and_adds_torch_compile_and_mfu_columns_only_when_measured():
    cpu = bench.format_table([row()])
    assert "| unetpp | 2x256x256 | fp32 | 2.0000 | 4.0000 | **0.50** |" in cpu
    assert "**0.80**" in cpu and "1.0 / 0.2" in cpu  # ratios and images/s
    assert "torch.compile" not in cpu and "MFU" not in cpu
    gpu = bench.format_table([row(torch_compile_infer_s=1.0, torch_compile_train_s=5.0,
                                  compile_infer_ratio=2.0, compile_train_ratio=1.6,
                                  gflop_infer=100.0, gflop_train=300.0, mfu_infer=0.25,
                                  mfu_train=0.125, peak_tflops=989.4)])
    assert "ratio vs torch.compile" in gpu and "2.00 / 1.60" in gpu
    assert "100 / 300" in gpu and "25.0% / 12.5%" in gpu
    assert len({line.count("|") for line in gpu.splitlines()}) == 1  # one width for all rows


def test_json_rows_carry_ratios_medians_compile_times_device_and_versions(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_xnnpack=false")
    path = tmp_path / "bench.json"
    bench._write_json(str(path), [row(), row("semseg_unet")])
    rows = json.loads(path.read_text())
    assert [r["arch"] for r in rows] == ["unetpp", "semseg_unet"]
    for key, value in [("infer_ratio", 0.5), ("train_ratio", 0.8), ("jax_infer_s", 2.0),
                       ("torch_train_s", 10.0), ("jax_compile_train_s", 50.0),
                       ("device", "cpu x1"), ("versions", "jax X, torch Y"),
                       ("xla_flags", "--xla_cpu_use_xnnpack=false")]:
        assert rows[0][key] == value


@pytest.mark.parametrize("kind, dtype, peak", [("NVIDIA H100 80GB HBM3", "fp32", 494.7),
                                               ("NVIDIA H200", "bf16", 989.4),
                                               ("cpu", "fp32", None),
                                               ("NVIDIA A100-SXM4-40GB", "bf16", None)])
def test_peak_tflops_are_known_for_hopper_only(kind, dtype, peak):
    assert bench.peak_tflops_of(kind, dtype) == peak


@pytest.mark.parametrize("arch, size, want", [("semseg_unet", 256, 252), ("semseg_unet", 100, 188),
                                              ("resnet50_unet", 256, 256), ("resnet50_unet", 100, 96),
                                              ("labml_unet", 100, 96), ("unetpp", 8, 16)])
def test_bench_size_is_the_nearest_valid_input(arch, size, want):
    assert bench.bench_size(arch, size) == (want, want)


def test_unknown_archs_are_rejected_before_anything_runs(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")  # main sets both: restored after the test
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    monkeypatch.setattr(bench.host_memory, "keep_freed_memory", lambda: False)
    monkeypatch.setattr(bench, "bench_arch", lambda *a, **k: pytest.fail("benchmarked"))
    parser = argparse.ArgumentParser()
    bench_cli.add_flags(parser)
    with pytest.raises(SystemExit, match="unknown arch.*unet_plus.*known archs: .*imgseg_unet"):
        bench.main(parser.parse_args(["--archs", "unetpp", "unet_plus"]))
