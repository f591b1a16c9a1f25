"""Training workdirs: `run.json` (what the checkpoints hold), orbax checkpoints of the
periodic (`checkpoints/`) and best-by-val-mIoU (`best/`) kinds, written and restored here.
`unet_jax.load(workdir)` reads the `model` item of one of them."""

import contextlib
import dataclasses
import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from unet_jax import atomic
from unet_jax.checkpoints import saved

RUN = "run.json"  # in a training workdir
WHICH = {"best": "best", "latest": "checkpoints"}  # workdir checkpoint kinds -> subdirectory


def is_workdir(path: Path) -> bool:
    return (Path(path) / RUN).is_file()


def checkpoint_managers(workdir: Path, keep: int) -> tuple[ocp.CheckpointManager, ...]:
    """(periodic, best-by-val-mIoU) managers, both saving asynchronously. Items: `model`
    (what `unet_jax.load(workdir)` reads), `optimizer` (periodic only) and `meta`."""
    periodic = ocp.CheckpointManager(
        workdir / WHICH["latest"],
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True))
    best = ocp.CheckpointManager(
        workdir / WHICH["best"],
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["miou"],
                                             best_mode="max", enable_async_checkpointing=True))
    return periodic, best


def save_checkpoint(manager, step: int, model, optimizer, meta: dict, metrics_=None) -> None:
    items = {"model": ocp.args.StandardSave(nnx.state(model)), "meta": ocp.args.JsonSave(meta)}
    if optimizer is not None:
        items["optimizer"] = ocp.args.StandardSave(nnx.state(optimizer))
    with checkpoint_writes(manager):
        manager.save(step, args=ocp.args.Composite(**items), metrics=metrics_)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, file-size limit, I/O error); the ones
    committed before it are intact (orbax renames a checkpoint into place once complete)."""


@contextlib.contextmanager
def checkpoint_writes(manager):
    """Report an orbax write failure (raised by a save, or by a later wait for an
    asynchronous one) as a `CheckpointWriteError` naming the directory, the cause and the
    checkpoints still good."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 (tensorstore reports OS errors as ValueError)
        try:
            manager.reload()
            steps = manager.all_steps()
        except Exception:  # noqa: BLE001
            steps = []
        kept = (f"the checkpoints of steps {', '.join(map(str, sorted(steps)))} are intact"
                if steps else "no checkpoint there is complete")
        raise CheckpointWriteError(
            f"could not write a checkpoint in {manager.directory} ({atomic.io_failure(e)}); "
            f"{kept} and nothing "
            "partial will be restored. Free space (or lift the limit) and rerun the same "
            "command to resume") from e


def _abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)


def restore_checkpoint(manager, model, optimizer) -> dict | None:
    """Restore the latest readable checkpoint into `model`/`optimizer`; its metadata, or
    None. orbax commits a checkpoint by renaming it into place, so a kill mid-save leaves no
    half-written step; one damaged afterwards (a truncated file, a missing item) is skipped
    for the previous good one, with one line saying so."""
    args = ocp.args.Composite(model=ocp.args.StandardRestore(_abstract(nnx.state(model))),
                              optimizer=ocp.args.StandardRestore(_abstract(nnx.state(optimizer))),
                              meta=ocp.args.JsonRestore())
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many kinds)
            print(f"checkpoint step {step} in {manager.directory} is damaged, skipped and "
                  f"removed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
            manager.delete(step)  # the rerun saves this step again
            continue
        nnx.update(model, restored.model)
        nnx.update(optimizer, restored.optimizer)
        return restored.meta
    return None


# Fields that define what a workdir's checkpoints hold: a rerun must not change them.
RUN_IDENTITY = ("arch", "config", "image_size", "preprocess")


def claim_workdir(workdir: Path, cfg, model: nnx.Module) -> None:
    """Write `run.json` (arch, config, class count, `cfg`'s training options) on a new workdir, or
    refuse a rerun whose arch, config or image size differ from the recorded ones."""
    record = {**saved.model_metadata(model), "image_size": cfg.image_size,
              "train": dataclasses.asdict(cfg)}
    path = workdir / RUN
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("arch") == record["arch"]:  # as read back: fields added since filled in
            stored["config"] = dataclasses.asdict(saved.config_from_metadata(stored, path)[1])
        differ = [f"{k}: {stored.get(k)!r} in the workdir, {record[k]!r} now"
                  for k in RUN_IDENTITY if stored.get(k) != record[k]]
        if differ:
            raise ValueError(f"{workdir} holds a run of another model; resume it with the same "
                             "options or choose a new --workdir:\n  - " + "\n  - ".join(differ))
    elif jax.process_index() == 0:
        if any((workdir / d).exists() for d in WHICH.values()):
            raise ValueError(f"{workdir} holds checkpoints but no {RUN} (written by an "
                             "older unet-jax?); choose a new --workdir")
        atomic.write_text(path, json.dumps(record, indent=2) + "\n")


@saved.absl_errors_only()
def restore_model(directory: Path, config, which: str):
    if which not in WHICH:
        raise ValueError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    checkpoints = directory / WHICH[which]
    graphdef, abstract = saved.abstract_model(config)
    manager = ocp.CheckpointManager(checkpoints, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = manager.latest_step() if checkpoints.is_dir() else None
        if step is None:
            other = "latest" if which == "best" else "best"
            raise saved.ModelSourceError(f"training workdir {directory} has no {which} checkpoint yet "
                                   f"({checkpoints} is empty); try which={other!r}")
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                model=ocp.args.StandardRestore(abstract)))
        except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many kinds)
            raise saved.ModelSourceError(f"{checkpoints / str(step)} is damaged: it cannot be read "
                                   f"({atomic.io_failure(e)})") from e
    finally:
        manager.close()
    return nnx.merge(graphdef, restored.model), step
