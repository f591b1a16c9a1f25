"""Saved models and training workdirs as model sources.

A saved model is an orbax checkpoint of the weights plus `unet_jax.json` naming the arch and
config. A training workdir holds `run.json` (arch, config, training options) and orbax
checkpoint managers `best/` (by val mIoU) and `checkpoints/` (periodic), whose `model` item
is the model's state. `load(path)` takes either (or a segmentation_models_pytorch
`save_pretrained` folder) and rebuilds the model without being told what it is;
`source_kind` is the one place that tells model sources apart.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from unet_jax import presets, registry

FORMAT = 1  # bump when the layout of a saved directory changes
METADATA = "unet_jax.json"  # in a saved model
RUN = "run.json"  # in a training workdir
WHICH = {"best": "best", "latest": "checkpoints"}  # workdir checkpoint kinds -> subdirectory


class ModelSourceError(ValueError):
    """A directory that is not a saved model or a usable training workdir."""


def save(model: nnx.Module, directory: str | Path) -> Path:
    """Write `model` to a new (or empty) `directory`; nothing is left behind on failure."""
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
    try:
        with staged_directory(directory) as staging:
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(staging / "state", nnx.state(model))
            checkpointer.wait_until_finished()
            meta = {**model_metadata(model), "state_sha256": state_digest(nnx.state(model))}
            (staging / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    except (OSError, ValueError) as e:  # tensorstore reports OS errors as ValueError
        raise OSError(f"could not write {directory} ({io_failure(e)}); nothing was left "
                      "there") from e
    return directory


@contextlib.contextmanager
def staged_directory(directory: Path):
    """A staging folder beside `directory` (new or empty), renamed into place when the block
    succeeds and removed when it fails: nobody ever sees a partial `directory`."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield staging
        if directory.exists():
            directory.rmdir()
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def state_digest(state) -> str:
    """sha256 of a model state's leaves (dtype, shape, bytes) in tree order: recorded at save,
    compared at load, so a damaged file cannot pass as a model."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        array = np.asarray(leaf)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def io_failure(e: BaseException, limit: int = 300) -> str:
    """An orbax read/write error's first line, its end kept when long (where tensorstore puts
    the OS's reason, e.g. "File too large [os_error_code='27']"). Silences asyncio's reports
    of the reads and writes orbax then abandons: this error says it once."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    line = str(e).splitlines()[0] if str(e) else type(e).__name__
    return line if len(line) <= limit else "..." + line[-limit:]


def model_metadata(model_or_config) -> dict:
    """{"format", "arch", "config", "num_classes", "in_channels", "preprocess", "input_size",
    "mask_values"}
    of a model or config (a config: its arch's upstream preset, no size)."""
    config = getattr(model_or_config, "config", model_or_config)
    arch = registry.arch_of_config(config)
    values = dataclasses.asdict(config)
    is_model = hasattr(model_or_config, "config")
    size = presets.recorded_size(model_or_config) if is_model else None
    return {"format": FORMAT, "arch": arch.name, "config": values,
            **{uniform: values[upstream] for uniform, upstream in arch.uniform.items()},
            "preprocess": presets.recorded(model_or_config) if is_model else arch.preprocess,
            "input_size": list(size) if size else None,
            "mask_values": presets.mask_values(model_or_config) if is_model else None}


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


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelSourceError(f"{path} is damaged: {e}") from e
    if not isinstance(meta, dict):
        raise ModelSourceError(f"{path} is damaged: it holds a JSON {type(meta).__name__}, not an object")
    return meta


def is_workdir(path: Path) -> bool:
    return (Path(path) / RUN).is_file()


def source_kind(path: str | Path) -> str:
    """What the model source `path` is: "saved" (a saved model), "workdir" (a training
    workdir), "smp" (a segmentation_models_pytorch `save_pretrained` folder) or "torch" (a
    checkpoint file, told by its content). Anything else raises a ModelSourceError saying
    what it is."""
    from unet_jax.convert import io, smp_hub
    path = Path(path)
    if path.is_dir():
        if (path / METADATA).is_file():
            return "saved"
        if is_workdir(path):
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
    if is_workdir(path):
        return "it is a unet-jax training workdir: load it with unet_jax.load"
    files = sorted(p.name for p in path.iterdir()
                   if p.suffix in (".pth", ".pt", ".bin", ".pkl", ".ckpt", ".safetensors"))
    if files:
        return f"it holds {', '.join(files[:5])}: pass one of these files"
    return "it holds no checkpoint file, saved model or training workdir"


def read_metadata(directory: str | Path) -> tuple[registry.Arch, object]:
    """(arch, config) of a saved model directory or training workdir."""
    return config_from_metadata(*_metadata(Path(directory)))


def _metadata(directory: Path) -> tuple[dict, Path]:
    """The metadata of a saved model directory or training workdir, and its file."""
    for name in (METADATA, RUN):
        if (directory / name).is_file():
            return _read_json(directory / name), directory / name
    if not directory.is_dir():
        raise ModelSourceError(f"{directory} does not exist")
    raise ModelSourceError(f"{directory} is not a saved unet-jax model or training workdir: "
                           f"{describe_directory(directory)}")


def _abstract(config):
    """(graphdef, abstract state on this process's first device) of `config`'s model."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: registry.build(config)))
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


@absl_errors_only()
def _restore_from_workdir(directory: Path, config, which: str):
    if which not in WHICH:
        raise ValueError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    checkpoints = directory / WHICH[which]
    graphdef, abstract = _abstract(config)
    manager = ocp.CheckpointManager(checkpoints, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = manager.latest_step() if checkpoints.is_dir() else None
        if step is None:
            other = "latest" if which == "best" else "best"
            raise ModelSourceError(f"training workdir {directory} has no {which} checkpoint yet "
                                   f"({checkpoints} is empty); try which={other!r}")
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                model=ocp.args.StandardRestore(abstract)))
        except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many kinds)
            raise ModelSourceError(f"{checkpoints / str(step)} is damaged: it cannot be read "
                                   f"({io_failure(e)})") from e
    finally:
        manager.close()
    return nnx.merge(graphdef, restored.model), step


def _restore_saved(directory: Path, config, meta: dict) -> nnx.Module:
    graphdef, abstract = _abstract(config)
    try:
        state = ocp.StandardCheckpointer().restore(directory / "state", abstract)
    except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many kinds)
        raise ModelSourceError(f"{directory} is damaged: its state cannot be read "
                               f"({io_failure(e)})") from e
    if meta.get("state_sha256") not in (None, state_digest(state)):
        raise ModelSourceError(f"{directory} is damaged: its state differs from what was saved "
                               f"(sha256 recorded in {METADATA})")
    return nnx.merge(graphdef, state)


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
        from unet_jax.convert.api import load_torch_with_report
        return (load_torch_with_report(directory, arch)[0],
                f"smp save_pretrained folder {directory}")
    meta, where = _metadata(directory)
    spec, config = config_from_metadata(meta, where)
    if arch is not None and arch != spec.name:
        raise ModelSourceError(f"{directory} holds a {spec.name} model, not {arch}")
    if is_workdir(directory) and not (directory / METADATA).is_file():
        model, step = _restore_from_workdir(directory, config, which)
        info = f"training workdir {directory}, {which} checkpoint (step {step})"
    else:
        model, info = _restore_saved(directory, config, meta), f"saved model {directory}"
    trained = meta.get("image_size") and (meta["image_size"],) * 2  # a workdir's run.json
    presets.record(model, meta.get("preprocess") or spec.preprocess, meta.get("input_size") or trained)
    presets.record_mask_values(model, meta.get("mask_values"))
    model.eval()
    return model, info
