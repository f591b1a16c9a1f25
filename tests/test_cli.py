"""The `unet-jax` commands as a user runs them, on real files in a temporary directory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SMALL, random_input

import unet_jax
from unet_jax import registry
from unet_jax.parity import harness


def cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unet_jax.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=None if env is None else {**os.environ, **env})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = registry.make_config("imgseg_unet", **SMALL["imgseg_unet"][0])
    reference = harness.random_reference(config, seed=11)
    path = tmp_path_factory.mktemp("ckpt") / "unet.pth"
    torch.save({"model_state_dict": reference.state_dict(), "epoch": 7}, path)
    return path, reference


def test_list_names_every_arch():
    out = cli("list").stdout
    for arch in unet_jax.list_models():
        assert arch in out
    assert "feature_scale=4" in out and "LeeJunHyun/Image_Segmentation" in out


def test_convert_saves_a_verified_model_that_reloads_identically(checkpoint, tmp_path):
    path, reference = checkpoint
    r = cli("convert", path, "-o", tmp_path / "model", "--size", "32x48")
    assert r.returncode == 0, r.stderr
    assert "arch:    imgseg_unet" in r.stdout and "PASS" in r.stdout
    assert "156 mapped" in r.stdout
    loaded = unet_jax.load(tmp_path / "model")
    direct = unet_jax.load_torch(path)
    x = random_input(32, 32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(direct(x)))
    np.testing.assert_allclose(np.asarray(loaded(x)), harness.torch_forward(reference, x)[0],
                               atol=1e-4)


@pytest.mark.parametrize("case", ["corrupt", "wrong-arch", "bad-option"])
def test_convert_errors_exit_nonzero_and_write_nothing(checkpoint, tmp_path, case):
    path, _ = checkpoint
    if case == "corrupt":
        bad = tmp_path / "bad.pth"
        bad.write_bytes(path.read_bytes()[:-2000])
        r = cli("convert", bad, "-o", tmp_path / "out")
        assert "bad.pth is truncated or not a torch checkpoint" in r.stderr
    elif case == "wrong-arch":
        r = cli("convert", path, "--arch", "unetpp", "-o", tmp_path / "out")
        assert "does not fit unetpp" in r.stderr and "stage_0.Conv_forward.0.weight" in r.stderr
    else:
        r = cli("convert", path, "--set", "n_classes=3", "-o", tmp_path / "out")
        assert "imgseg_unet has no option n_classes" in r.stderr
    assert r.returncode != 0
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_convert_refuses_a_non_empty_directory(checkpoint, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    r = cli("convert", checkpoint[0], "-o", tmp_path / "out", "--no-verify")
    assert r.returncode != 0 and "not empty" in r.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_parity_command_reports_outputs_and_layers(checkpoint):
    r = cli("parity", checkpoint[0], "--size", "48x32", "--batch", "2", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["size"] == [48, 32] and report["batch"] == 2
    assert report["outputs"][0]["max_rel"] <= 1e-4
    assert report["first_bad_layer"] is None and len(report["layers"]) == 45
    r = cli("parity", checkpoint[0], "--size", "32", "--dtype", "float64")
    assert r.returncode == 0 and "float64" in r.stdout and "PASS" in r.stdout
    r = cli("parity", checkpoint[0], "--size", "40x40")
    assert r.returncode != 0 and "multiples of 16" in r.stderr


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_export_loads_strictly_into_torch_and_reproduces_outputs(checkpoint, tmp_path, suffix):
    path, reference = checkpoint
    assert cli("convert", path, "-o", tmp_path / "m", "--no-verify").returncode == 0
    out = tmp_path / f"back{suffix}"
    r = cli("export", tmp_path / "m", "-o", out)
    assert r.returncode == 0, r.stderr
    if suffix == ".pth":
        state = torch.load(out, weights_only=True)
    else:
        from safetensors.torch import load_file
        state = load_file(out)
    fresh = harness.reference_for(reference_config := unet_jax.load(tmp_path / "m").config)
    fresh.load_state_dict(state, strict=True)
    for k, v in reference.state_dict().items():
        assert torch.equal(state[k], v), k
    x = random_input(32, 32)
    np.testing.assert_array_equal(harness.torch_forward(fresh.eval(), x)[0],
                                  harness.torch_forward(reference, x)[0])
    assert reference_config == registry.make_config("imgseg_unet", **SMALL["imgseg_unet"][0])
    r = cli("export", tmp_path / "m", "-o", out)
    assert r.returncode != 0 and "exists" in r.stderr


def test_load_rejects_foreign_directories(tmp_path):
    with pytest.raises(ValueError, match="not a saved unet-jax model, training workdir or smp "
                                         "save_pretrained folder"):
        unet_jax.load(tmp_path)
    model = unet_jax.create_model("imgseg_unet", base_width=4)
    unet_jax.save(model, tmp_path / "m")
    with pytest.raises(ValueError, match="holds a imgseg_unet model, not unetpp"):
        unet_jax.load(tmp_path / "m", arch="unetpp")
    meta = tmp_path / "m" / "unet_jax.json"
    meta.write_text(meta.read_text().replace('"format": 1', '"format": 99'))
    with pytest.raises(ValueError, match="written in format 99; this unet-jax reads format 1"):
        unet_jax.load(tmp_path / "m")


@pytest.mark.slow
def test_train_command_runs_and_logs(tmp_path):
    r = cli("train", "--arch", "imgseg_unet", "--model", "base_width=4", "--image-size", "32",
            "--train-samples", "16", "--val-samples", "8", "--batch-size", "8", "--epochs", "1",
            "--set", "lr=0.01", "--no-progress", "--workdir", tmp_path / "run",
            env={"UNET_JAX_COMPILATION_CACHE": str(tmp_path / "xla")})
    assert r.returncode == 0, r.stderr
    assert "val mIoU" in r.stdout
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["epoch"] == 1 and 0 <= row["miou"] <= 1
    assert any((tmp_path / "xla").iterdir()), "the train step was not put in the compilation cache"


@pytest.mark.slow
def test_pretrained_backbone_files(tmp_path):
    from unet_jax.parity.references import bubbliiiing
    torch.manual_seed(0)
    resnet = bubbliiiing.ResNet()
    sd = dict(resnet.state_dict(), **{"fc.weight": torch.zeros(1000, 2048),
                                      "fc.bias": torch.zeros(1000)})
    torch.save(sd, tmp_path / "resnet50-19c8e357.pth")
    model = unet_jax.create_model("resnet50_unet", num_classes=3,
                                  backbone_weights=tmp_path / "resnet50-19c8e357.pth")
    np.testing.assert_array_equal(np.asarray(model.resnet.layer3[2].conv2.kernel[...]),
                                  sd["layer3.2.conv2.weight"].numpy().transpose(2, 3, 1, 0))
    vgg = bubbliiiing.VGG()
    smp = {f"encoder.{k}": v for k, v in vgg.state_dict().items()}
    model = unet_jax.create_model("vgg16_unet", backbone_weights=smp)
    np.testing.assert_array_equal(np.asarray(model.vgg.features["28"].bias[...]),
                                  vgg.state_dict()["features.28.bias"].numpy())
    with pytest.raises(unet_jax.ConversionError, match="features.28.bias"):
        unet_jax.create_model("vgg16_unet", backbone_weights={
            k: v for k, v in vgg.state_dict().items() if k != "features.28.bias"})
    with pytest.raises(ValueError, match="imgseg_unet has no pretrained backbone; ImageNet "
                                         "backbone weights apply to .*smp_unet"):
        unet_jax.create_model("imgseg_unet", backbone_weights=smp)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["resnet18", "resnet34", "resnet50"])
def test_smp_encoders_take_torchvision_imagenet_files(encoder, tmp_path):
    """smp's usual start (`encoder_weights="imagenet"`): a torchvision ResNet file fills the
    encoder exactly (fc ignored), also under smp's `encoder.` prefix; the torch reference
    with the same encoder weights gives the same encoder features."""
    from unet_jax.convert.torch_packages import import_smp
    import_smp()  # declares torchvision's compiled ops where its wheel cannot load them
    import torchvision
    torch.manual_seed(0)
    net = getattr(torchvision.models, encoder)()
    harness.randomize_weights(net, seed=1)
    torch.save(net.state_dict(), tmp_path / f"{encoder}.pth")
    model = unet_jax.create_model("smp_unet", encoder_name=encoder, encoder_depth=4,
                                  decoder_channels=(32, 16, 16, 8), classes=2,
                                  backbone_weights=tmp_path / f"{encoder}.pth")
    sd = net.state_dict()
    np.testing.assert_array_equal(np.asarray(model.encoder.layer4[1].conv1.kernel[...]),
                                  sd["layer4.1.conv1.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(model.encoder.bn1.mean[...]), sd["bn1.running_mean"].numpy())
    exported = unet_jax.to_torch_state_dict(model)
    for k, v in sd.items():
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(exported[f"encoder.{k}"], v.numpy(), err_msg=k)
    prefixed = unet_jax.create_model("smp_unet", encoder_name=encoder, classes=2, backbone_weights={
        f"encoder.{k}": v for k, v in sd.items() if not k.startswith("fc.")})
    np.testing.assert_array_equal(np.asarray(prefixed.encoder.conv1.kernel[...]),
                                  np.asarray(model.encoder.conv1.kernel[...]))
    other = "resnet18" if encoder == "resnet50" else "resnet50"  # another block layout
    with pytest.raises(unet_jax.ConversionError, match=f"the {other} encoder of smp_unet"):
        unet_jax.create_model("smp_unet", encoder_name=other, backbone_weights=tmp_path / f"{encoder}.pth")
