"""Full disk: a checkpoint, convert or export that fails mid-write under a file-size limit
(RLIMIT_FSIZE, what `ulimit -f` sets; writes past it fail with EFBIG as on a full disk)
leaves the previous checkpoint intact, reports the error and the path, exits 2, and leaves
nothing partial; a rerun without the limit resumes and ends equal to an uninterrupted run."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import unet_jax
from unet_jax import registry
from unet_jax.cli import main
from unet_jax.train.reporting import read_metrics

LIMIT = 60_000  # bytes: above metrics.jsonl and the pictures, below one checkpoint's data files
TRAIN = ["train", "--arch", "imgseg_unet", "--model", "base_width=4", "--num-classes", "3",
         "--image-size", "32", "--train-samples", "16", "--val-samples", "4", "--batch-size", "4",
         "--checkpoint-every", "4", "--log-every", "1", "--no-progress"]


def limited(args: list[str]) -> subprocess.CompletedProcess:
    """`unet-jax args` in a subprocess whose files may not exceed LIMIT bytes."""
    start = ("import resource, runpy, sys; hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]; "
             f"resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, hard)); "
             "sys.argv[0] = 'unet-jax'; runpy.run_module('unet_jax.cli', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", start, *args], capture_output=True, text=True,
                          timeout=600)


def error_line(result: subprocess.CompletedProcess) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("error: "))


def committed(workdir, kind="checkpoints") -> list[str]:
    return sorted(p.name for p in (workdir / kind).iterdir())


@pytest.mark.slow
def test_checkpoint_on_a_full_disk_keeps_the_previous_one_and_resumes_exactly(tmp_path):
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    assert main([*TRAIN, "--epochs", "2", "--workdir", str(reference)]) == 0
    assert main([*TRAIN, "--epochs", "2", "--stop-at-step", "4", "--workdir", str(victim)]) == 0

    result = limited([*TRAIN, "--epochs", "2", "--workdir", str(victim)])
    assert result.returncode == 2, result.stderr[-2000:]
    message = error_line(result)
    assert f"could not write a checkpoint in {victim / 'checkpoints'}" in message
    assert "File too large" in message and "the checkpoints of steps 4 are intact" in message
    assert "4" in committed(victim) and "8" not in committed(victim)  # step 8 never committed
    assert unet_jax.load(victim, which="latest") is not None  # the previous one is usable

    assert main([*TRAIN, "--epochs", "2", "--workdir", str(victim)]) == 0
    assert read_metrics(victim) == read_metrics(reference)
    assert committed(victim) == committed(reference)
    for which in ("latest", "best"):
        a = unet_jax.to_torch_state_dict(unet_jax.load(reference, which=which))
        b = unet_jax.to_torch_state_dict(unet_jax.load(victim, which=which))
        assert all(np.array_equal(a[k], b[k]) for k in a), which


def test_convert_and_export_on_a_full_disk_leave_nothing(tmp_path):
    from unet_jax.parity.references import REFERENCES
    config = registry.make_config("imgseg_unet", base_width=4, output_ch=3)
    checkpoint = tmp_path / "model.pth"
    torch.save(REFERENCES["imgseg_unet"](config).state_dict(), checkpoint)
    assert checkpoint.stat().st_size > LIMIT

    result = limited(["convert", str(checkpoint), "-o", str(tmp_path / "saved"), "--no-verify"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"could not write {tmp_path / 'saved'}" in error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]  # no staging folder

    assert main(["convert", str(checkpoint), "-o", str(tmp_path / "saved"), "--no-verify"]) == 0
    for out in ("back.pth", "back.safetensors"):
        result = limited(["export", str(tmp_path / "saved"), "-o", str(tmp_path / out)])
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"could not write {tmp_path / out}" in error_line(result)
        if out.endswith(".safetensors"):  # torch's zip writer does not say why
            assert "File too large" in error_line(result)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "saved"]
    assert json.loads((tmp_path / "saved" / "unet_jax.json").read_text())["arch"] == "imgseg_unet"
