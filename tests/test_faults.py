"""Faults during training: non-finite losses (stop or skip), one run per workdir."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from unet_jax import train
from unet_jax.checkpoints import lock as workdir_lock
from unet_jax.cli import main
from unet_jax.data import datasets as data
from unet_jax.data import layouts
from unet_jax.train import loop

TINY = dict(arch="imgseg_unet", model={"base_width": 4}, num_classes=3, image_size=32,
            train_samples=16, val_samples=4, batch_size=4, epochs=1, progress=False,
            log_every=2)


class Poisoned:
    """Float images with NaN in sample `bad` (uint8 images cannot carry one)."""

    def __init__(self, base, bad: int):
        self.base, self.bad, self.num_classes = base, bad, base.num_classes

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, mask = self.base[i]
        image = image.astype(np.float32)
        if i == self.bad:
            image[0, 0, 0] = np.nan
        return image, mask


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """SGD at lr 1e6 diverges: training stops within log_every steps naming the step and the
    loss, exit 1, and no checkpoint holds a step at or after the first bad one."""
    workdir = tmp_path / "w"
    args = ["train", "--arch", "imgseg_unet", "--model", "base_width=4", "--num-classes", "3",
            "--image-size", "32", "--train-samples", "32", "--val-samples", "4", "--batch-size", "4",
            "--epochs", "1", "--optimizer", "sgd", "--lr", "1e6", "--warmup-epochs", "0",
            "--checkpoint-every", "1", "--log-every", "2", "--no-progress", "--workdir", str(workdir)]
    assert main(args) == 1
    err = capsys.readouterr().err
    step = int(err.split("error: step ")[1].split(":")[0])
    assert "non-finite loss or gradient" in err and "training stopped" in err
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert all(s < step for s in saved)
    assert (f"step {saved[-1]} in" in err) if saved else ("no checkpoint had been saved" in err)
    assert not (workdir / workdir_lock.LOCK).exists()  # released on the error


@pytest.mark.slow
def test_skip_leaves_the_state_as_before(tmp_path, monkeypatch):
    """With on_nonfinite=skip a poisoned sample's step changes nothing and is counted; the
    other steps train normally."""
    real = train.make_datasets

    def poisoned(cfg, channels=3):
        train_set, val_set = real(cfg, channels)
        return Poisoned(train_set, bad=5), val_set

    monkeypatch.setattr(loop, "make_datasets", poisoned)
    cfg = train.TrainConfig(**TINY, on_nonfinite="skip", workdir=str(tmp_path / "skip"))
    summary = train.train(cfg)
    assert summary["skipped_steps"] == 1 and np.isfinite(summary["train_loss"])
    import jax
    from flax import nnx
    assert all(np.isfinite(np.asarray(v)).all()
               for v in jax.tree.leaves(nnx.state(summary["model"])))
    with pytest.raises(train.NonFiniteLossError, match=r"step \d+: the loss is nan"):
        train.train(train.TrainConfig(**TINY, workdir=str(tmp_path / "stop")))


def test_one_run_per_workdir(tmp_path, capsys):
    """A workdir held by a live process is refused naming it; a stale lock (the process is
    gone) is taken over with one line; the lock is released at the end."""
    in_use = pytest.raises(workdir_lock.WorkdirInUseError, match=f"in use by process {os.getpid()} on")
    with workdir_lock.held(tmp_path), in_use, workdir_lock.held(tmp_path):
        pass
    assert not (tmp_path / workdir_lock.LOCK).exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": sleeper.pid, "host": socket.gethostname(), "since": "earlier",
                "pid_start": workdir_lock._start_time(sleeper.pid)}
        (tmp_path / workdir_lock.LOCK).write_text(json.dumps(lock))
        args = ["train", "--arch", "imgseg_unet", "--model", "base_width=4", "--image-size", "32",
                "--train-samples", "8", "--val-samples", "4", "--batch-size", "4", "--epochs", "1",
                "--no-progress", "--workdir", str(tmp_path)]
        assert main(args) == 2
        assert f"is in use by process {sleeper.pid}" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    with workdir_lock.held(tmp_path):  # the holder is dead now: stale
        assert json.loads((tmp_path / workdir_lock.LOCK).read_text())["pid"] == os.getpid()
    assert f"took over the stale lock of process {sleeper.pid}" in capsys.readouterr().out


def test_float_datasets_normalise_like_uint8():
    """Float pixel values (a custom Dataset) go through the presets like uint8 ones."""
    from unet_jax import presets
    image = data.Shapes(1, height=8, width=8)[0][0]
    a = presets.get("imgseg").normalize(image[None])
    b = presets.get("imgseg").normalize(image[None].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def bad_folder(root):
    """An images/ + masks/ folder of 24 40x40 pairs, three of them bad: an image that is not
    a PNG, a mask of another size, mask values out of range (none in val or at sample 0)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(rng.integers(0, 3, (40, 40), np.uint8)).save(root / "masks" / f"{i:02d}.png")
    val = {p[0].name for p in layouts.from_spec(f"images:{root}").splits["val"]}
    bad = [f"{i:02d}.png" for i in range(1, 24) if f"{i:02d}.png" not in val][:3]
    (root / "images" / bad[0]).write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    Image.fromarray(rng.integers(0, 3, (30, 40), np.uint8)).save(root / "masks" / bad[1])
    Image.fromarray(rng.integers(5, 7, (40, 40), np.uint8)).save(root / "masks" / bad[2])
    return bad


def test_bad_training_files_stop_naming_the_file_or_are_skipped_and_counted(tmp_path, capsys):
    bad = bad_folder(tmp_path / "data")
    args = ["train", "--arch", "imgseg_unet", "--model", "base_width=4", "--num-classes", "3",
            "--image-size", "32", "--data", f"images:{tmp_path / 'data'}", "--batch-size", "4",
            "--epochs", "1", "--no-progress", "--data-threads", "0"]
    assert main([*args, "--workdir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / "data") in err and any(b in err for b in bad)

    assert main([*args, "--bad-files", "skip", "--workdir", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 of 22 train samples (bad files):" in out
    lines = [line for line in out.splitlines() if line.startswith("  - ")]
    assert len(lines) == 3 and all(any(b in line for line in lines) for b in bad)
    assert "not a readable image" in out and "40x30" in out and "mask values [5, 6]" in out


def test_samples_failing_after_the_scan_are_replaced_and_counted(tmp_path, capsys):
    """A file that goes bad after the pre-training scan: the next sample takes its place,
    named once and counted; a split with no readable sample is an error."""
    bad_folder(tmp_path)
    found = layouts.from_spec(f"images:{tmp_path}")
    dataset, problems = data.without_bad_files(data.FileDataset(tuple(found.splits["train"]), 3))
    assert len(problems) == 3 and len(dataset) == 19
    skipping = data.SkippingBadSamples(dataset)
    dataset.pairs[5][0].write_bytes(b"gone bad")
    np.testing.assert_array_equal(skipping[5][0], dataset[6][0])
    np.testing.assert_array_equal(skipping[5][0], skipping[5][0])
    assert list(skipping.skipped) == [5] and str(dataset.pairs[5][0]) in capsys.readouterr().out
    for image, _ in dataset.pairs:
        image.write_bytes(b"gone bad")
    with pytest.raises(ValueError, match="none of the 19 samples can be read"):
        skipping[0]


def test_damaged_checkpoint_is_skipped_on_resume(tmp_path, capsys):
    """A truncated data file in the latest checkpoint: the rerun says so in one line, removes
    it and resumes from the previous one."""
    args = ["train", "--arch", "imgseg_unet", "--model", "base_width=4", "--num-classes", "3",
            "--image-size", "32", "--train-samples", "16", "--val-samples", "4", "--batch-size", "4",
            "--checkpoint-every", "2", "--no-progress", "--workdir", str(tmp_path)]
    assert main([*args, "--epochs", "2", "--stop-at-step", "4"]) == 0
    largest = max((tmp_path / "checkpoints" / "4" / "model").rglob("*"), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[:100])
    capsys.readouterr()
    assert main([*args, "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint step 4 in {tmp_path / 'checkpoints'} is damaged, skipped and removed" in out
    assert f"resumed from {tmp_path / 'checkpoints'} at step 2" in out
