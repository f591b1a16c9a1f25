"""What a new user meets first, run as typed on the command line: an smp `save_pretrained`
folder taken by every command, files that are not models named as what they are, the
documented `--model` example, only our lines on the terminal, a line while a step compiles,
outputs never overwritten, flag typos answered with the command's usage, and the out-of-range
mask message in the caller's spelling."""

import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import unet_jax
from unet_jax import registry
from unet_jax.checkpoints import workdir as workdirs
from unet_jax.cli import main
from unet_jax.cli.main import build_parser, parse_args
from unet_jax.cli.parsing import parse_value
from unet_jax.cli.train import config_from_args
from unet_jax.data import datasets as data
from unet_jax.parity import harness
from unet_jax.train import TrainConfig

SMP = dict(encoder_name="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8), classes=2)
COMPILED = r"compiling the {} for \d+x\d+x\d+x3 {}\.\.\. \d+\.\d s"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An smp save_pretrained folder (and its torch state_dict), a photo, a torch checkpoint
    of another model, a training workdir and a dataset whose masks hold class 5."""
    root = tmp_path_factory.mktemp("first")
    config = registry.make_config("smp_unet", **SMP)
    state = harness.random_reference(config, seed=3).state_dict()
    (root / "hub").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, root / "hub" / "model.safetensors")
    options = {**vars(config), "decoder_channels": list(config.decoder_channels)}
    (root / "hub" / "config.json").write_text(json.dumps(
        {"_model_class": "Unet", "activation": None, "aux_params": None, "encoder_weights": None,
         **options}, indent=2))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / "photo.jpg")
    imgseg = registry.make_config("imgseg_unet", base_width=4, output_ch=3)
    torch.save(harness.random_reference(imgseg, seed=1).state_dict(), root / "real.pth")

    cfg = TrainConfig(arch="imgseg_unet", model={"base_width": 4}, num_classes=3,
                            image_size=32, workdir=str(root / "run"))
    model = unet_jax.create_model("imgseg_unet", base_width=4, num_classes=3)
    (root / "run").mkdir()
    workdirs.claim_workdir(root / "run", cfg, model)
    _, best = workdirs.checkpoint_managers(root / "run", 1)
    workdirs.save_checkpoint(best, 1, model, None, {"step": 1}, {"miou": 0.5})
    best.wait_until_finished()
    best.close()

    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (root / "ds" / split / folder).mkdir(parents=True)
        mask = np.zeros((32, 32), np.uint8)
        mask[:4] = 5
        image = rng.integers(0, 256, (32, 32, 3), np.uint8)
        Image.fromarray(image).save(root / "ds" / split / "images" / "0.png")
        Image.fromarray(mask).save(root / "ds" / split / "masks" / "0.png")
    return root, {k: v.numpy() for k, v in state.items()}


def run(*args) -> int:
    return main([str(a) for a in args])


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unet_jax.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def one_error(err: str) -> str:
    """The single `error: ...` line of a failed command."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.slow
def test_an_smp_folder_is_a_model_for_parity_predict_export_and_train(files, tmp_path, capsys,
                                                                      monkeypatch):
    root, state = files
    hub = root / "hub"
    monkeypatch.setenv("UNET_JAX_COMPILATION_CACHE", "")
    assert run("parity", hub, "--size", "32", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["outputs"][0]["max_rel"] <= 1e-4

    assert run("predict", hub, root / "photo.jpg", "-o", tmp_path / "pred", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "smp_unet, 2 classes" in out
    assert re.search(COMPILED.format("prediction", "windows"), out), out
    assert Image.open(tmp_path / "pred" / "photo.png").size == (32, 32)

    assert run("export", hub, "-o", tmp_path / "back.pth") == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert set(back) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key].numpy(), value, err_msg=key)
    capsys.readouterr()

    assert run("train", "--init-from", hub, "--image-size", "32", "--train-samples", "2",
               "--val-samples", "2", "--batch-size", "2", "--epochs", "1", "--no-progress",
               "--workdir", tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert f"initialised from {hub}" in out
    assert re.search(COMPILED.format("train step", "batches"), out), out
    assert re.search(COMPILED.format("eval step", "batches"), out), out
    trained = unet_jax.load(tmp_path / "run")
    assert registry.arch_of_config(trained.config).name == "smp_unet"


def test_an_image_or_a_torch_file_given_to_export_is_named_with_what_to_run(files, tmp_path,
                                                                            capsys):
    root, _ = files
    assert run("export", root / "photo.jpg", "-o", tmp_path / "x.pth") == 2
    line = one_error(capsys.readouterr().err)
    assert "photo.jpg is a JPEG image, not a model checkpoint" in line and "does not exist" not in line

    assert run("export", root / "real.pth", "-o", tmp_path / "y.pth") == 2
    line = one_error(capsys.readouterr().err)
    assert "real.pth is a torch checkpoint file" in line and "does not exist" not in line
    assert not (tmp_path / "y.pth").exists()
    # the commands it suggests do it
    suggested = re.findall(r"unet-jax ((?:convert|export) [^,]+?)(?:, then|$)", line)
    assert [s.split()[0] for s in suggested] == ["convert", "export"], line
    for command in suggested:
        argv = shlex.split(command.replace("MODEL_DIR", str(tmp_path / "model")))
        assert run(*argv, *(["--no-verify"] if argv[0] == "convert" else [])) == 0
    assert set(torch.load(tmp_path / "y.pth", weights_only=True)) == set(
        torch.load(root / "real.pth", weights_only=True))

    assert run("predict", root / "photo.jpg", root / "hub", "-o", tmp_path / "p") == 2
    line = one_error(capsys.readouterr().err)
    assert "JPEG image" in line and "the first argument of predict is the model" in line
    assert not (tmp_path / "p").exists()


def test_the_model_examples_of_train_help_are_taken():
    text = " ".join(build_parser(["train"]).commands["train"].format_help().split())
    examples = re.findall(r"e\.g\. --model (\S+) or --model ('[^']*')", text)
    assert examples, text
    for example in examples[0]:
        args = parse_args(["train", "--model", *shlex.split(example), "--model", "depth=5"])
        assert config_from_args(args, parse_value).model == {"base_width": 16, "depth": 5}
    for bad in ("base_width", "[16]", "{base_width: 16}"):
        with pytest.raises(ValueError, match="--model"):
            config_from_args(parse_args(["train", "--model", bad]), parse_value)


def test_predict_and_evaluate_of_a_workdir_print_only_their_own_lines(files, tmp_path):
    root, _ = files
    r = cli("predict", root / "run", root / "photo.jpg", "-o", tmp_path / "pred", "--no-progress")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert all(line.split()[0] in ("read:", "model:", "compiling", "done:")
               for line in r.stdout.splitlines()), r.stdout
    r = cli("evaluate", root / "run", "--data", f"images:{root / 'ds'}", "--out-of-range", "ignore",
            "-o", tmp_path / "eval", "--no-progress")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "absl" not in r.stdout and "read only" not in r.stdout


def test_outputs_are_not_overwritten_and_flag_typos_get_the_command_usage(files, tmp_path,
                                                                         capsys):
    root, _ = files
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.png").write_bytes(b"mine")
    (tmp_path / "file.png").write_bytes(b"mine too")
    model, photo, ds = root / "run", root / "photo.jpg", f"images:{root / 'ds'}"
    for command in (["predict", model, photo, "-o", kept],
                    ["evaluate", model, "--data", ds, "-o", kept],
                    ["predict", model, photo, "-o", tmp_path / "file.png"],
                    ["evaluate", model, "--data", ds, "-o", tmp_path / "file.png"]):
        assert run(*command) == 2, command
        line = one_error(capsys.readouterr().err)
        assert "Errno" not in line and ("not empty" in line or "is a file" in line), line
    assert [p.name for p in kept.iterdir()] == ["mine.png"]
    assert (kept / "mine.png").read_bytes() == b"mine"
    assert (tmp_path / "file.png").read_bytes() == b"mine too"

    with pytest.raises(SystemExit) as exit_:
        run("predict", model, photo, "-o", tmp_path / "new", "--tiel", "512")
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: unet-jax predict ") and "did you mean --tile?" in err, err
    with pytest.raises(SystemExit) as exit_:
        run("predcit", model, photo)
    assert exit_.value.code == 2 and "did you mean predict?" in capsys.readouterr().err


def test_out_of_range_masks_name_the_flags_on_the_command_line_and_options_in_python(
        files, tmp_path, capsys):
    root, _ = files
    ds = f"images:{root / 'ds'}"
    assert run("train", "--data", ds, "--num-classes", "3", "--model", "base_width=4",
               "--image-size", "32", "--batch-size", "1", "--workdir", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "--out-of-range ignore" in err and "--num-classes 6" in err, err
    assert "out_of_range=" not in err
    assert run("evaluate", root / "hub", "--data", ds, "-o", tmp_path / "eval", "--no-progress") == 2
    line = one_error(capsys.readouterr().err)
    assert "--out-of-range ignore" in line and "a model of 6 or more classes" in line, line
    assert run("data", root / "ds", "--classes", "3") == 2
    assert "--classes 6" in capsys.readouterr().out
    pairs = ((root / "ds" / "val" / "images" / "0.png", root / "ds" / "val" / "masks" / "0.png"),)
    with pytest.raises(ValueError, match=r'out_of_range="ignore", or train 6 classes with '
                                         r"num_classes=6"):
        data.FileDataset(pairs, 3).read(0)
