"""Saved models: an orbax checkpoint of the weights (`state/`) plus `unet_jax.json` naming
the arch, its config, what the model records (preset, input size, mask values) and the
state's sha256. Written and read here; also the metadata helpers training workdirs share."""

import contextlib
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from unet_jax import atomic, registry
from unet_jax.models import build, recorded

FORMAT = 1  # bump when the layout of a saved directory changes
METADATA = "unet_jax.json"  # in a saved model


class ModelSourceError(ValueError):
    """A directory that is not a saved model or a usable training workdir."""


def save(model: nnx.Module, directory: str | Path) -> Path:
    """Write `model` to a new (or empty) `directory`; nothing is left behind on failure."""
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
    try:
        with atomic.staged_directory(directory) as staging:
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(staging / "state", nnx.state(model))
            checkpointer.wait_until_finished()
            meta = {**model_metadata(model), "state_sha256": state_digest(nnx.state(model))}
            (staging / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    except (OSError, ValueError) as e:  # tensorstore reports OS errors as ValueError
        raise OSError(f"could not write {directory} ({atomic.io_failure(e)}); nothing was left "
                      "there") from e
    return directory


def state_digest(state) -> str:
    """sha256 of a model state's leaves (dtype, shape, bytes) in tree order: recorded at save,
    compared at load, so a damaged file cannot pass as a model."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        array = np.asarray(leaf)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def model_metadata(model_or_config) -> dict:
    """{"format", "arch", "config", "num_classes", "in_channels", "preprocess", "input_size",
    "mask_values"}
    of a model or config (a config: its arch's upstream preset, no size)."""
    config = getattr(model_or_config, "config", model_or_config)
    arch = registry.arch_of_config(config)
    values = dataclasses.asdict(config)
    is_model = hasattr(model_or_config, "config")
    size = recorded.input_size_of(model_or_config) if is_model else None
    return {"format": FORMAT, "arch": arch.name, "config": values,
            **{uniform: values[upstream] for uniform, upstream in arch.uniform.items()},
            "preprocess": recorded.preset_of(model_or_config) if is_model else arch.preprocess,
            "input_size": list(size) if size else None,
            "mask_values": recorded.mask_values(model_or_config) if is_model else None}


def config_from_metadata(meta: dict, where: Path):
    """(arch, config) recorded in `meta`, read from the file `where`."""
    if meta.get("format") != FORMAT:
        raise ModelSourceError(f"{where} was written in format {meta.get('format')!r}; this "
                               f"unet-jax reads format {FORMAT}. Re-save it with a matching version.")
    try:
        arch = registry.get_arch(meta["arch"])
        # fields added since the file was written: what their absence meant then
        stored = {**getattr(arch.config, "MISSING_MEANS", {}), **meta["config"]}
        return arch, registry.make_config(arch.name, **stored)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelSourceError(f"{where} is damaged or from another version ({e})") from e


def read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelSourceError(f"{path} is damaged: {e}") from e
    if not isinstance(meta, dict):
        raise ModelSourceError(f"{path} is damaged: it holds a JSON {type(meta).__name__}, not an object")
    return meta


def abstract_model(config):
    """(graphdef, abstract state on this process's first device) of `config`'s model."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build.build(config)))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return graphdef, jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)


@contextlib.contextmanager
def absl_errors_only():
    """Only errors of absl's logger (orbax logs through it), e.g. not the "Given directory is
    read only" warnings of every read-only restore."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def restore(directory: Path, config, meta: dict) -> nnx.Module:
    graphdef, abstract = abstract_model(config)
    try:
        state = ocp.StandardCheckpointer().restore(directory / "state", abstract)
    except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many kinds)
        raise ModelSourceError(f"{directory} is damaged: its state cannot be read "
                               f"({atomic.io_failure(e)})") from e
    if meta.get("state_sha256") not in (None, state_digest(state)):
        raise ModelSourceError(f"{directory} is damaged: its state differs from what was saved "
                               f"(sha256 recorded in {METADATA})")
    return nnx.merge(graphdef, state)
