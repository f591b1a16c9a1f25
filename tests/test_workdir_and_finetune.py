"""A training run is a model source (load, export, parity, init_from); fine-tuning to other
classes or channels re-initialises exactly the layers that change; start-up checks."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import unet_jax
from unet_jax import presets, registry, train
from unet_jax.convert.api import to_torch_state_dict
from unet_jax.inference import metrics
from unet_jax.models import outputs, recorded
from unet_jax.parity import harness
from unet_jax.train.model import make_model, resolve

TINY = dict(arch="imgseg_unet", model={"base_width": 4}, num_classes=3, image_size=32,
            train_samples=16, val_samples=6, batch_size=8, epochs=2, progress=False)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "unet_jax.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-epoch run whose validation split (6) is smaller than one batch (8)."""
    workdir = tmp_path_factory.mktemp("run") / "w"
    summary = train.train(train.TrainConfig(**TINY, workdir=str(workdir)))
    return workdir, summary


def test_validation_smaller_than_a_batch_scores_every_sample(run):
    workdir, summary = run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    model = summary["model"]
    model.eval()
    cfg, _ = resolve(train.TrainConfig(**TINY))
    val = train.make_datasets(cfg)[1]
    images = np.stack([val[i][0] for i in range(len(val))])
    masks = np.stack([val[i][1] for i in range(len(val))])
    logits = model(presets.get(cfg.preprocess).normalize(images))  # uint8 as the trainer sees it
    cm = metrics.confusion_matrix(outputs.classes(logits), masks, 3, 255)
    assert int(np.asarray(cm).sum()) == 6 * 32 * 32
    assert rows[-1]["miou"] == pytest.approx(metrics.summarize(np.asarray(cm))["miou"], abs=1e-6)


def test_workdir_loads_best_and_latest_and_records_the_model(run):
    workdir, summary = run
    record = json.loads((workdir / "run.json").read_text())
    assert (record["arch"], record["num_classes"], record["config"]["base_width"]) == ("imgseg_unet", 3, 4)
    latest = unet_jax.load(workdir, which="latest")
    final = to_torch_state_dict(summary["model"])
    for k, v in to_torch_state_dict(latest).items():
        np.testing.assert_array_equal(v, final[k])
    best = unet_jax.load(workdir)
    assert best.config == latest.config
    # the preset and size it was trained with travel: workdir, saved model
    assert (recorded.preset_of(best), recorded.input_size_of(best)) == ("imgseg", (32, 32))
    saved = unet_jax.load(unet_jax.save(best, workdir.parent / "saved"))
    assert (recorded.preset_of(saved), recorded.input_size_of(saved)) == ("imgseg", (32, 32))
    with pytest.raises(ValueError, match="which must be one of best, latest"):
        unet_jax.load(workdir, which="last")


@pytest.mark.slow
def test_export_and_parity_of_a_workdir(run, tmp_path):
    workdir, _ = run
    r = cli("export", workdir, "-o", tmp_path / "trained.pth", "--which", "latest")
    assert r.returncode == 0, r.stderr
    assert "training workdir" in r.stdout and "latest checkpoint" in r.stdout
    module = harness.reference_for(registry.make_config("imgseg_unet", base_width=4, output_ch=3))
    module.load_state_dict(torch.load(tmp_path / "trained.pth", weights_only=True), strict=True)
    x = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    model = unet_jax.load(workdir, which="latest")
    np.testing.assert_allclose(np.asarray(model(x)), harness.torch_forward(module.eval(), x)[0],
                               atol=1e-4)
    r = cli("parity", workdir, "--size", "32")
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr


def test_finetune_from_a_workdir_infers_the_arch_and_reinitialises_the_head(run):
    workdir, _ = run
    cfg, source = resolve(train.TrainConfig(init_from=str(workdir), num_classes=2))
    assert (cfg.arch, cfg.num_classes) == ("imgseg_unet", 2)
    model, lines = make_model(cfg, source)
    assert lines[1:] == ["re-initialised Conv_1x1 (bias (3,) -> (2,), "
                         "weight (3, 4, 1, 1) -> (2, 4, 1, 1))"]
    old, new = to_torch_state_dict(source), to_torch_state_dict(model)
    assert new["Conv_1x1.weight"].shape == (2, 4, 1, 1)
    for k in new:
        if not k.startswith("Conv_1x1."):
            np.testing.assert_array_equal(new[k], old[k], err_msg=k)
    cfg, source = resolve(train.TrainConfig(init_from=str(workdir)))
    assert cfg.num_classes == 3 and make_model(cfg, source)[1] == [f"initialised from {workdir}"]


def test_finetune_a_21_class_torch_file_to_4_classes_and_1_channel(tmp_path):
    config = registry.make_config("vgg16_unet", num_classes=21)
    module = harness.random_reference(config, seed=2)
    torch.save(module.state_dict(), tmp_path / "voc.pth")
    cfg, source = resolve(train.TrainConfig(init_from=str(tmp_path / "voc.pth"),
                                                  num_classes=4, model={"in_channels": 1}))
    model, lines = make_model(cfg, source)
    assert cfg.arch == "vgg16_unet"
    assert lines[1:] == [
        "re-initialised final (bias (21,) -> (4,), weight (21, 64, 1, 1) -> (4, 64, 1, 1))",
        "re-initialised vgg.features.0 (bias (64,) -> (64,), weight (64, 3, 3, 3) -> (64, 1, 3, 3))"]
    old, new = module.state_dict(), to_torch_state_dict(model)
    kept = [k for k in new if not k.startswith(("final.", "vgg.features.0."))]
    assert len(kept) == len(new) - 4
    for k in kept:
        np.testing.assert_array_equal(new[k], old[k].numpy(), err_msg=k)
    with pytest.raises(ValueError, match="nearest_upsampling: False there, True here"):
        make_model(dataclasses.replace(cfg, model={"nearest_upsampling": True}), source)


def test_start_up_checks_find_every_problem_before_the_first_step(tmp_path):
    workdir = tmp_path / "w"
    cfg = train.TrainConfig(arch="semseg_unet", model={"feature_scale": 16}, image_size=64,
                            train_samples=4, batch_size=8, workdir=str(workdir))
    with pytest.raises(ValueError) as e:
        train.train(cfg)
    message = str(e.value)
    assert "the train split has 4 samples, fewer than one batch of 8" in message
    assert "image_size 64: semseg_unet: input (64, 64) is too small; the smallest input is 188" in message
    assert not workdir.exists()


def test_rerun_with_another_model_is_refused_and_a_stopped_validation_resumes(run, tmp_path):
    workdir, _ = run
    with pytest.raises(ValueError, match="holds a run of another model") as e:
        train.train(train.TrainConfig(**dict(TINY, model={"base_width": 8}), workdir=str(workdir)))
    assert "'base_width': 4" in str(e.value) and "'base_width': 8" in str(e.value)
    metrics_file = workdir / "metrics.jsonl"
    lines = metrics_file.read_text().splitlines()
    metrics_file.write_text("\n".join(lines[:1]) + "\n")  # stopped before epoch 2's validation
    summary = train.train(train.TrainConfig(**TINY, workdir=str(workdir)))
    again = metrics_file.read_text().splitlines()
    assert len(again) == 2 and json.loads(again[1]) == json.loads(lines[1])
    assert summary["epoch"] == 2


def test_train_help_shows_the_defaults_of_the_arch():
    out = " ".join(cli("train", "--arch", "semseg_unet", "--help").stdout.split())
    assert "(default: 252 for semseg_unet)" in out
    assert "(default: imgseg_unet unless --init-from names another)" in out


def test_init_from_applies_options_the_weights_cannot_show(tmp_path):
    config = registry.make_config("unetpp", base_width=4, num_classes=3)
    torch.save(harness.random_reference(config).state_dict(), tmp_path / "Unet++_40.pth")
    cfg, source = resolve(train.TrainConfig(init_from=str(tmp_path / "Unet++_40.pth"),
                                                  model={"deep_supervision": True}))
    model, lines = make_model(cfg, source)
    assert (cfg.arch, cfg.num_classes, model.config.deep_supervision) == ("unetpp", 3, True)
    assert lines == [f"initialised from {tmp_path / 'Unet++_40.pth'}"]
