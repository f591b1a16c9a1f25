"""Training: learning on synthetic data, 1 vs 8 devices, exact resume, bf16, frozen backbone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import unet_jax
from unet_jax.inference.compiled import inference_jit
from unet_jax.train import TrainConfig, train

WORKER = Path(__file__).parent / "train_worker.py"
SMALL = dict(arch="imgseg_unet", model={"base_width": 8}, image_size=32, train_samples=32,
             val_samples=16, batch_size=8, progress=False)


def run_worker(cfg: dict, out: Path, devices: int = 1, extra_env: dict | None = None,
               **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", **(extra_env or {}))
    args = [sys.executable, str(WORKER), json.dumps(cfg), str(out)]
    if popen:
        return subprocess.Popen(args, env=env, **popen)
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_training_learns_the_shapes(tmp_path):
    cfg = TrainConfig(arch="imgseg_unet", model={"base_width": 8}, image_size=48,
                      train_samples=128, val_samples=32, batch_size=16, epochs=6, lr=5e-3,
                      progress=False, workdir=str(tmp_path))
    summary = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < 0.6 * rows[0]["train_loss"]
    assert summary["miou"] >= 0.5, summary  # chance (all background) is ~0.2
    for name in ("curves.png", "predictions.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert list((tmp_path / "tb").iterdir())


@pytest.mark.slow
def test_one_device_equals_eight_devices(tmp_path):
    cfg = dict(SMALL, epochs=1, stop_at_step=3, lr=1e-2, optimizer="sgd")
    r1 = run_worker(dict(cfg, workdir=str(tmp_path / "w1")), tmp_path / "one.npz", devices=1)
    r8 = run_worker(dict(cfg, workdir=str(tmp_path / "w8")), tmp_path / "eight.npz", devices=8)
    assert [json.loads(r.stdout.splitlines()[-1])["devices"] for r in (r1, r8)] == [1, 8]
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "eight.npz")
    assert set(a) == set(b)
    # Sharded reductions sum in another order: float32 rounding, amplified by three SGD steps
    # at lr 1e-2 (measured on a 2-core AMD EPYC: up to 1.6e-5 absolute with float inputs, 6.5e-5
    # on the stem kernel's weights of up to 0.18 with uint8 inputs, 2 of 216 elements).
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-4, err_msg=k)


@pytest.mark.slow
def test_two_processes_on_localhost_equal_one_process(tmp_path):
    """Multi-host data parallelism: 2 processes x 1 CPU device, gloo collectives."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = dict(SMALL, epochs=1, lr=1e-2, optimizer="sgd")
    run_worker(dict(cfg, workdir=str(tmp_path / "single")), tmp_path / "single.npz", devices=2)
    procs = [run_worker(dict(cfg, workdir=str(tmp_path / "multi"), coordinator=f"127.0.0.1:{port}",
                             num_processes=2, process_id=i), tmp_path / f"p{i}.npz",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert [json.loads(out.splitlines()[-1])["devices"] for out, _ in results] == [2, 2]
    single = np.load(tmp_path / "single.npz")
    for i in (0, 1):
        multi = np.load(tmp_path / f"p{i}.npz")
        for k in single:
            np.testing.assert_allclose(multi[k], single[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    cfg = dict(SMALL, epochs=2, checkpoint_every=3)
    full = tmp_path / "full.npz"
    run_worker(dict(cfg, workdir=str(tmp_path / "a")), full)
    run_worker(dict(cfg, workdir=str(tmp_path / "b"), stop_at_step=5), tmp_path / "part.npz")
    run_worker(dict(cfg, workdir=str(tmp_path / "b")), tmp_path / "resumed.npz")
    a, b = np.load(full), np.load(tmp_path / "resumed.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    logs = [(tmp_path / d / "metrics.jsonl").read_text() for d in ("a", "b")]
    assert logs[0] == logs[1]


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import signal
    import time
    cfg = dict(SMALL, epochs=50, workdir=str(tmp_path / "w"))
    proc = run_worker(cfg, tmp_path / "p.npz", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    deadline = time.time() + 300
    while not (tmp_path / "w" / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "interrupted: checkpoint saved at step" in out
    assert json.loads(out.strip().splitlines()[-1])["interrupted"] is True
    steps = [int(p.name) for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()]
    assert max(steps) >= 4


def _params(model):
    return {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.state(model, nnx.Param).flat_state()}


def test_bfloat16_step_keeps_float32_params(tmp_path):
    summary = train(TrainConfig(**dict(SMALL, epochs=1, dtype="bfloat16", remat=True,
                                       workdir=str(tmp_path))))
    assert np.isfinite(summary["train_loss"])
    assert {v.dtype for v in _params(summary["model"]).values()} == {np.dtype("float32")}


@pytest.mark.slow
def test_frozen_backbone_does_not_change(tmp_path):
    import unet_jax
    base = dict(arch="vgg16_unet", image_size=32, train_samples=16, val_samples=8, batch_size=8,
                epochs=1, progress=False, optimizer="sgd", lr=0.05, weight_decay=1e-3,
                freeze_backbone_epochs=1)
    before = _params(unet_jax.create_model("vgg16_unet", num_classes=4, seed=0))
    after = _params(train(TrainConfig(**base, workdir=str(tmp_path / "a")))["model"])
    for k in before:
        same = np.array_equal(before[k], after[k])
        assert same if k.startswith("vgg.") else not same, k


@pytest.mark.slow
def test_frozen_smp_encoder_does_not_change(tmp_path):
    """smp archs declare `encoder` as their backbone: frozen, it keeps its weights."""
    import unet_jax
    model = dict(encoder_name="resnet18", encoder_depth=3, decoder_channels=[16, 8, 8])
    base = dict(arch="smp_unet", model=model, image_size=32, train_samples=16, val_samples=8,
                batch_size=8, epochs=1, progress=False, optimizer="sgd", lr=0.05,
                freeze_backbone_epochs=1)
    before = _params(unet_jax.create_model("smp_unet", num_classes=4, seed=0, **model))
    after = _params(train(TrainConfig(**base, workdir=str(tmp_path / "a")))["model"])
    for k in before:
        same = np.array_equal(before[k], after[k])
        assert same if k.startswith("encoder.") else not same, k


def test_freezing_needs_a_backbone(tmp_path):
    with pytest.raises(ValueError, match="freeze_backbone_epochs needs a pretrained backbone; "
                                         "imgseg_unet has none .*smp_unet"):
        train(TrainConfig(**dict(SMALL, freeze_backbone_epochs=1, workdir=str(tmp_path))))


@pytest.mark.parametrize("arch, model, size", [
    ("unetpp", {"base_width": 4, "deep_supervision": True}, 32),
    ("labml_unet", {"base_width": 4}, 40),
    ("semseg_unet", {"feature_scale": 32}, 188)])
@pytest.mark.slow
def test_deep_supervision_and_cropped_outputs_train(tmp_path, monkeypatch, arch, model, size):
    """Run as GPUs/TPUs run it (plain ops: UNET_JAX_CPU_KERNELS=0), which also compiles faster."""
    monkeypatch.setenv("UNET_JAX_CPU_KERNELS", "0")
    summary = train(TrainConfig(**dict(SMALL, arch=arch, model=model, image_size=size,
                                       epochs=1, loss="ce+0.5*dice", workdir=str(tmp_path / arch))))
    assert np.isfinite(summary["train_loss"]) and 0 <= summary["miou"] <= 1, arch


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="unknown loss 'lovasz'"):
        TrainConfig(loss="ce+lovasz")


def test_inference_jit_matches_the_model_and_refuses_training_mode():
    model = unet_jax.create_model("imgseg_unet", base_width=8)
    infer = inference_jit(lambda m, x: m(x))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 32, 32, 3)), jnp.float32)
    with pytest.raises(ValueError, match=r"BatchNorm at .* is in training mode: call model.eval"):
        infer(model, x)
    model.eval()
    np.testing.assert_allclose(infer(model, x), model(x), rtol=1e-5, atol=1e-5)
    assert infer.lower(model, x).compile() is not None


def test_nothing_recompiles_after_the_first_epoch(tmp_path, caplog, monkeypatch):
    """Two epochs, validation ending in a partial batch (10 samples, batch 4): the train and
    eval steps compile once each, and nothing at all compiles during the second epoch."""
    import logging

    import jax

    from unet_jax.train import reporting
    events = []
    epoch = reporting.Logger.epoch
    monkeypatch.setattr(reporting.Logger, "epoch",
                        lambda self, summary: (events.append("epoch"), epoch(self, summary)))
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax"):
            handler = logging.Handler()
            handler.emit = lambda record: (record.getMessage().startswith("Compiling ")
                                           and events.append(record.getMessage().split()[1]))
            logging.getLogger("jax").addHandler(handler)
            try:
                train(TrainConfig(**dict(SMALL, model={"base_width": 4}, train_samples=12,
                                         val_samples=10, batch_size=4, epochs=2, log_every=2,
                                         workdir=str(tmp_path))))
            finally:
                logging.getLogger("jax").removeHandler(handler)
    finally:
        jax.config.update("jax_log_compiles", False)
    first, second = [i for i, e in enumerate(events) if e == "epoch"]
    assert events[first + 1:second] == [], "compiled during the second epoch"
    assert events.count("jit(train_step)") == 1 and events.count("jit(eval_step)") == 1, events
