"""Model sources: anything a model can come from (a torch checkpoint file, a mapping of
tensors, a saved unet-jax model, a training workdir, an smp `save_pretrained` folder), told
apart in one place (`source_kind`) and opened by `load` / `open_model`."""

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from flax import nnx

from unet_jax import registry
from unet_jax.checkpoints import saved, workdir
from unet_jax.checkpoints.saved import METADATA, ModelSourceError
from unet_jax.convert import io, smp_hub
from unet_jax.convert.api import load_torch_with_report
from unet_jax.convert.export import to_torch_state_dict
from unet_jax.models import recorded


def source_kind(path: str | Path) -> str:
    """What the model source `path` is: "saved" (a saved model), "workdir" (a training
    workdir), "smp" (a segmentation_models_pytorch `save_pretrained` folder) or "torch" (a
    checkpoint file, told by its content). Anything else raises a ModelSourceError saying
    what it is."""
    path = Path(path)
    if path.is_dir():
        if (path / METADATA).is_file():
            return "saved"
        if workdir.is_workdir(path):
            return "workdir"
        if smp_hub.is_folder(path):
            return "smp"
        raise ModelSourceError(f"{path} is not a saved unet-jax model, training workdir or smp "
                               f"save_pretrained folder: {describe_directory(path)}")
    if not path.exists():
        raise ModelSourceError(f"{path} does not exist (no such file or folder)")
    try:
        io.sniff(path)
    except io.CheckpointError as e:
        raise ModelSourceError(str(e)) from None
    return "torch"


def describe_directory(path: Path) -> str:
    """What a directory given as a checkpoint is, and what to do with it."""
    path = Path(path)
    if (path / METADATA).is_file():
        return "it is a saved unet-jax model: load it with unet_jax.load"
    if workdir.is_workdir(path):
        return "it is a unet-jax training workdir: load it with unet_jax.load"
    return io.describe_files(path)


def read_metadata(directory: str | Path) -> tuple[registry.Arch, object]:
    """(arch, config) of a saved model directory or training workdir."""
    return saved.config_from_metadata(*_metadata(Path(directory)))


def _metadata(directory: Path) -> tuple[dict, Path]:
    """The metadata of a saved model directory or training workdir, and its file."""
    for name in (METADATA, workdir.RUN):
        if (directory / name).is_file():
            return saved.read_json(directory / name), directory / name
    if not directory.is_dir():
        raise ModelSourceError(f"{directory} does not exist")
    raise ModelSourceError(f"{directory} is not a saved unet-jax model or training workdir: "
                           f"{describe_directory(directory)}")


def load(path: str | Path, *, arch: str | None = None, which: str = "best") -> nnx.Module:
    """The model in `path`, in eval mode: a saved model directory, a training workdir (its
    best checkpoint by val mIoU, or `which="latest"`) or an smp `save_pretrained` folder.
    With `arch`, it must match."""
    return load_with_info(path, arch=arch, which=which)[0]


def load_with_info(path: str | Path, *, arch: str | None = None, which: str = "best"
                   ) -> tuple[nnx.Module, str]:
    """`load`, also returning one line saying what was loaded."""
    directory = Path(path).absolute()
    kind = source_kind(directory)
    if kind == "torch":
        raise ModelSourceError(f"{directory} is a torch checkpoint file, not a saved model or "
                               "training workdir: read it with unet_jax.load_torch")
    if kind == "smp":
        return (load_torch_with_report(directory, arch)[0],
                f"smp save_pretrained folder {directory}")
    meta, where = _metadata(directory)
    spec, config = saved.config_from_metadata(meta, where)
    if arch is not None and arch != spec.name:
        raise ModelSourceError(f"{directory} holds a {spec.name} model, not {arch}")
    if workdir.is_workdir(directory) and not (directory / METADATA).is_file():
        model, step = workdir.restore_model(directory, config, which)
        info = f"training workdir {directory}, {which} checkpoint (step {step})"
    else:
        model, info = saved.restore(directory, config, meta), f"saved model {directory}"
    trained = meta.get("image_size") and (meta["image_size"],) * 2  # a workdir's run.json
    recorded.record(model, meta.get("preprocess") or spec.preprocess, meta.get("input_size") or trained)
    recorded.record_mask_values(model, meta.get("mask_values"))
    model.eval()
    return model, info


def open_model(source: str | os.PathLike | Mapping, arch: str | None = None, *,
               which: str = "best", dtype=None, **config):
    """(model in eval mode, report, torch state_dict) from any model source.

    Torch files and smp `save_pretrained` folders are read as they are; saved models and
    training workdirs (`which` picks a workdir's "best" or "latest" checkpoint) are exported
    to a state_dict and loaded like a torch file, so every source gets the same checks,
    `dtype` and report; the report's "notes" say what was read. `source_kind` tells
    them apart.
    """
    if isinstance(source, Mapping) or source_kind(source) in ("torch", "smp"):
        return load_torch_with_report(source, arch, dtype=dtype, **config)
    saved, info = load_with_info(source, arch=arch, which=which)
    spec = registry.arch_of_config(saved.config)
    options = {**dataclasses.asdict(saved.config), **config}
    model, report, state = load_torch_with_report(to_torch_state_dict(saved), spec.name,
                                                  dtype=dtype, **options)
    recorded.carry_over(saved, model)
    report["notes"].insert(0, info)
    return model, report, state
