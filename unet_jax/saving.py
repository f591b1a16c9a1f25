"""Saved models: an orbax checkpoint of the weights plus `unet_jax.json` naming the arch and
config, so `load(directory)` rebuilds the model without being told what it is."""

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

from unet_jax import registry

FORMAT = 1  # bump when the layout of a saved directory changes
METADATA = "unet_jax.json"


def save(model: nnx.Module, directory: str | Path) -> Path:
    """Write `model` to a new (or empty) `directory`; nothing is left behind on failure."""
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
    arch = registry.arch_of_config(model.config)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(staging / "state", nnx.state(model))
        checkpointer.wait_until_finished()
        meta = {"format": FORMAT, "arch": arch.name, "config": dataclasses.asdict(model.config)}
        (staging / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
        if directory.exists():
            directory.rmdir()
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_metadata(directory: str | Path) -> tuple[registry.Arch, object]:
    """(arch, config) of a saved model directory, with clear errors for foreign ones."""
    directory = Path(directory)
    path = directory / METADATA
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved unet-jax model (no {METADATA})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is damaged: {e}") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory} was saved in format {meta.get('format')!r}; this "
                         f"unet-jax reads format {FORMAT}. Re-save it with a matching version.")
    arch = registry.get_arch(meta["arch"])
    return arch, registry.make_config(arch.name, **meta["config"])


def load(directory: str | Path, *, arch: str | None = None) -> nnx.Module:
    """The model saved in `directory`, in eval mode. With `arch`, the saved arch must match."""
    directory = Path(directory).absolute()
    spec, config = read_metadata(directory)
    if arch is not None and arch != spec.name:
        raise ValueError(f"{directory} holds a {spec.name} model, not {arch}")
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: registry.build(config)))
    state = ocp.StandardCheckpointer().restore(directory / "state", abstract)
    model = nnx.merge(graphdef, state)
    model.eval()
    return model
