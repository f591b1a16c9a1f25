"""Checkpoint files as the upstream training scripts write them, and every odd file a user has.

Each upstream row writes random weights exactly the way that project's training script saves
them, loads the file with and without `arch`, and checks parity against the torch reference.
"""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import SMALL

import unet_jax
from unet_jax import registry
from unet_jax.convert.api import load_torch_with_report
from unet_jax.parity import harness


def reference(arch: str, seed: int = 3):
    return harness.random_reference(registry.make_config(arch, **SMALL[arch][0]), seed=seed)


def assert_parity(path, module, arch):
    """Loaded without arch: parity with torch; with arch: the same weights."""
    model, report, state = load_torch_with_report(path, **_options(arch))
    result = harness.check_state_dict(state, model, SMALL[arch][1][0])
    assert result.ok, result.format()
    assert set(state) == set(module.state_dict())
    again = unet_jax.to_torch_state_dict(unet_jax.load_torch(path, arch, **_options(arch)))
    for k, v in unet_jax.to_torch_state_dict(model).items():
        np.testing.assert_array_equal(again[k], v, err_msg=k)
    return report


def _options(arch):  # what the weights cannot show
    return {"deep_supervision": True} if arch == "unetpp" else {}


def save_semseg(module, path):
    """pytorch-semseg train.py: DataParallel model, a dict with optimizer/scheduler state and
    a numpy best_iou, to `{arch}_{dataset}_best_model.pkl`."""
    model = torch.nn.DataParallel(module)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-10, momentum=0.99, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    torch.save({"epoch": 12, "model_state": model.state_dict(),
                "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict(), "best_iou": np.float64(0.61)}, path)


def save_state_dict(module, path):
    """LeeJunHyun solver.py (`U_Net-...pkl`), bubbliiiing utils_fit.py
    (`best_epoch_weights.pth`), labml's checkpoint saver (`model.pth`), the UNet++ blog
    (`Unet++_{epoch}.pth`): `torch.save(model.state_dict(), path)`."""
    torch.save(module.state_dict(), path)


UPSTREAMS = [  # (arch, file name as the upstream names it, how it saves)
    ("semseg_unet", "unet_pascal_best_model.pkl", save_semseg),
    ("imgseg_unet", "U_Net-100-0.0002-70-0.4000.pkl", save_state_dict),
    ("vgg16_unet", "best_epoch_weights.pth", save_state_dict),
    ("resnet50_unet", "ep100-loss0.120-val_loss0.210.pth", save_state_dict),
    ("labml_unet", "model.pth", save_state_dict),
    ("unetpp", "Unet++_40.pth", save_state_dict),
]


@pytest.mark.slow
@pytest.mark.parametrize("arch, name, save", UPSTREAMS, ids=[u[0] for u in UPSTREAMS])
def test_upstream_training_checkpoints_load_with_parity(arch, name, save, tmp_path):
    module = reference(arch)
    save(module, tmp_path / name)
    report = assert_parity(tmp_path / name, module, arch)
    if arch == "semseg_unet":
        assert report["ignored"] == ["epoch (an int)", "optimizer_state (a dict)",
                                     "scheduler_state (a dict)", "best_iou (a numpy.float64)"]
        assert report["notes"] == ["state_dict found under ['model_state']", "prefix 'module.' removed"]


@pytest.mark.slow
def test_whole_model_pickle_from_a_script_loads_without_its_classes(tmp_path):
    """torch.save(model) in a training script: the classes live in its __main__, which the
    loading process does not have; nothing is imported, the weights are read."""
    script = tmp_path / "train_unetpp.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        from unet_jax.parity.references import unetpp
        from unet_jax import registry
        class UnetPlusPlus(unetpp.UnetPlusPlus):  # the blog's class, defined in the script
            pass
        config = registry.make_config("unetpp", **{SMALL["unetpp"][0]!r})
        torch.manual_seed(0)
        model = UnetPlusPlus(num_classes=config.num_classes, deep_supervision=True,
                             base_width=config.base_width)
        torch.save(model, r"{tmp_path / 'whole.pth'}")
        torch.save(torch.nn.DataParallel(model), r"{tmp_path / 'whole_dp.pth'}")
        torch.save(model.state_dict(), r"{tmp_path / 'weights.pth'}")
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    weights = torch.load(tmp_path / "weights.pth", weights_only=True)
    for name in ("whole.pth", "whole_dp.pth"):
        model, report, state = load_torch_with_report(tmp_path / name, deep_supervision=True)
        assert list(state) == list(weights)
        for k, v in weights.items():
            np.testing.assert_array_equal(state[k], v.numpy())
        assert any("__main__.UnetPlusPlus" in n for n in report["notes"]), report["notes"]
        module = reference("unetpp")
        module.load_state_dict(weights)
        assert harness.check_state_dict(state, model, (32, 32)).ok


def test_legacy_format_and_plain_pickle(tmp_path):
    module = reference("imgseg_unet")
    torch.save(module.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(module, tmp_path / "legacy_whole.pth", _use_new_zipfile_serialization=False)
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(module.state_dict(), f)
    for name in ("legacy.pth", "legacy_whole.pth", "plain.pkl"):
        assert_parity(tmp_path / name, module, "imgseg_unet")


@pytest.mark.parametrize("wrap", ["lightning", "compile", "net", "nested", "safetensors"])
def test_wrappers_and_prefixes(wrap, tmp_path):
    module = reference("imgseg_unet")
    sd = module.state_dict()
    path = tmp_path / "w.ckpt"
    if wrap == "lightning":
        torch.save({"epoch": 3, "global_step": 90, "pytorch-lightning_version": "2.4.0",
                    "state_dict": {f"model.{k}": v for k, v in sd.items()},
                    "optimizer_states": [{}], "lr_schedulers": []}, path)
    elif wrap == "compile":
        torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, path)
    elif wrap == "net":
        torch.save({"net": {f"net.{k}": v for k, v in sd.items()}, "optim": {}}, path)
    elif wrap == "nested":
        torch.save({"checkpoint": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
                    "epoch": 1}, path)
    else:
        from safetensors.torch import save_file
        path = tmp_path / "w.pth"  # a safetensors file with a torch suffix: sniffed by content
        save_file({f"model.{k}": v.contiguous() for k, v in sd.items()}, path)
    assert_parity(path, module, "imgseg_unet")


def test_non_tensor_entries_and_profiling_buffers_are_ignored_and_reported(tmp_path):
    module = reference("imgseg_unet")
    sd = dict(module.state_dict())
    sd.update({"mask_values": [0, 1], "_metadata": {"": {"version": 1}}, "epoch": 4, "lr": 0.1,
               "total_ops": torch.zeros(1, dtype=torch.float64),
               "Conv1.conv.0.total_params": torch.zeros(1)})
    torch.save(sd, tmp_path / "milesial_style.pth")
    report = assert_parity(tmp_path / "milesial_style.pth", module, "imgseg_unet")
    assert report["ignored"] == ["mask_values (a list)", "_metadata (a dict)", "epoch (an int)",
                                 "lr (a float)", "total_ops (profiling buffer)",
                                 "Conv1.conv.0.total_params (profiling buffer)"]
    assert report["extras"]["mask_values"] == [0, 1]
    sd["Conv1.extra.weight"] = torch.zeros(3)  # an unknown tensor stays a strict error
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(unet_jax.ConversionError, match=r"\+ in checkpoint, not in model:\n    Conv1"):
        unet_jax.load_torch(tmp_path / "extra.pth", arch="imgseg_unet")


class _Exploit:
    marker = None

    def __reduce__(self):
        import os
        return (os.system, (f"touch {_Exploit.marker}",))


class _Holder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.payload = _Exploit()


def test_hostile_pickles_run_nothing_in_any_position(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    tensor = torch.zeros(2)
    tensor.payload = _Exploit()  # pickled into the tensor's rebuild state
    files = {"top.pkl": None, "top.pth": _Exploit(), "module.pth": _Holder(),
             "tensor.pth": {"conv.weight": tensor}, "entry.pth": {"w": torch.zeros(1), "x": _Exploit()}}
    with open(tmp_path / "top.pkl", "wb") as f:
        pickle.dump({"final.weight": _Exploit()}, f)
    for name, obj in files.items():
        if obj is not None:
            torch.save(obj, tmp_path / name)
    for name in files:
        with pytest.raises((unet_jax.CheckpointError, unet_jax.ConversionError)) as e:
            unet_jax.load_torch(tmp_path / name)
        assert not _Exploit.marker.exists(), name
        assert name in str(e.value)
    state = load_torch_with_report(tmp_path / "module.pth", strict=False, arch="imgseg_unet")[2]
    assert set(state) == {"conv.weight", "conv.bias"}  # the module's weights, payload inert
    with pytest.raises(unet_jax.CheckpointError, match="top.pth holds an object of posix.system"):
        unet_jax.load_torch(tmp_path / "top.pth")
    assert not _Exploit.marker.exists()


def test_damaged_storage_bounds_are_refused(tmp_path):
    """A tensor whose size/stride reach past its storage must not read foreign memory."""
    from unet_jax.convert import torch_pickle
    storage = torch_pickle.Storage(np.float32, 4, np.zeros(4, np.float32))
    with pytest.raises(torch_pickle.UnsafePickleError, match="does not fit its storage"):
        np.asarray(torch_pickle.Tensor(storage, 2, (3,), (1,)))
    with pytest.raises(torch_pickle.UnsafePickleError, match="invalid size"):
        torch_pickle.Tensor(storage, 0, (2,), (-1,))


@pytest.mark.parametrize("case, message", [
    ("empty", "empty.pth is empty \\(0 bytes\\)"),
    ("directory", "is a directory, not a checkpoint file; it holds w.pth: pass one of these"),
    ("absent", "checkpoint not found: .*absent.pth"),
    ("text", "text.pth is not a torch checkpoint or a safetensors file \\(it starts with 'hello"),
    ("list", "holds a list, not a state_dict"),
    ("optimizer only", "holds no state_dict of tensors \\(none; entries: state, param_groups\\)"),
    ("unknown keys", "fits none of the ported archs .*only part of a model"),
])
def test_bad_files_get_one_clear_error(case, message, tmp_path):
    path = tmp_path / f"{case.split()[0]}.pth"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "directory":
        path = tmp_path / "folder"
        path.mkdir()
        torch.save({}, path / "w.pth")
    elif case == "text":
        path.write_text("hello, this is not a checkpoint\n")
    elif case == "list":
        torch.save([torch.zeros(3)], path)
    elif case == "optimizer only":
        torch.save(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1).state_dict(), path)
    elif case == "unknown keys":
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises((unet_jax.CheckpointError, unet_jax.ConversionError), match=message):
        unet_jax.load_torch(path)


def test_cli_exit_codes_are_the_same_for_every_input_error(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    for command in (["convert", tmp_path / "empty.pth", "-o", tmp_path / "out"],
                    ["parity", tmp_path / "empty.pth"], ["export", tmp_path, "-o", tmp_path / "x.pth"],
                    ["convert", tmp_path, "-o", tmp_path / "out"]):
        r = subprocess.run([sys.executable, "-m", "unet_jax.cli", *map(str, command)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (command, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("x, message", [
    (np.zeros((1, 32, 32, 3), np.uint8), "expects a floating-point image batch, got uint8: scale"),
    (np.zeros((1, 32, 32, 1), np.float32), "1 channels \\(a grayscale image: repeat it to RGB"),
    (np.zeros((1, 32, 32, 4), np.float32), "4 channels \\(an RGBA image: drop the alpha"),
    (np.zeros((32, 32, 3), np.float32), "a single image: add the batch axis"),
])
def test_model_inputs_name_the_problem(x, message):
    model = unet_jax.create_model("imgseg_unet", base_width=4)
    with pytest.raises(ValueError, match=message):
        model(x)
