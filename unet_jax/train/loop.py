"""Training: jit-compiled and data-parallel over every device of every process.

`train` reads straight through: options resolved, model and datasets made, preflight, the
workdir claimed and locked, then the loop of steps, read-backs, checkpoints and validation.
The batch is sharded `P("data")` over `jax.make_mesh((n,), ("data",))`, the state
replicated; so under `nnx.jit` BatchNorm statistics, the loss and the metrics are global,
and one device, N simulated CPU devices and N hosts run the same program.
"""

import contextlib
import math
import signal
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from unet_jax import registry
from unet_jax.checkpoints import lock as workdir_lock
from unet_jax.checkpoints import workdir as workdirs
from unet_jax.compile_notice import Announced
from unet_jax.data import augment, pipeline
from unet_jax.train import faults, reporting, volumes
from unet_jax.train.config import TrainConfig
from unet_jax.train.inputs import make_datasets, skipping_bad_files
from unet_jax.train.model import make_model, resolve
from unet_jax.train.nonfinite import NonFiniteLossError, all_finite
from unet_jax.train.optimizer import learning_rate, make_optimizer
from unet_jax.train.preflight import preflight
from unet_jax.train.setup import global_batch, make_mesh, maybe_initialize_distributed, to_host
from unet_jax.train.steps import make_steps, validate


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (resuming from `workdir` when it holds a checkpoint); the last epoch's metrics.
    The workdir is locked for the run (`unet_jax.workdir_lock`)."""
    maybe_initialize_distributed(cfg)
    workdir = Path(cfg.workdir).absolute()
    if volumes.volume_layout(cfg.data) is not None:
        cfg, model, init_lines, train_set, val_set = volumes.setup(cfg)
    else:
        cfg, source = resolve(cfg)
        model, init_lines = make_model(cfg, source)
        train_set, val_set = make_datasets(cfg, registry.uniform_option(model, "in_channels"))
    if cfg.bad_files == "skip" and not getattr(train_set, "draws_samples", False):
        train_set, val_set = (skipping_bad_files(d, name, cfg.data_threads)
                              for d, name in ((train_set, "train"), (val_set, "val")))
    preflight(cfg, model, {"train": train_set, "val": val_set})
    workdir.mkdir(parents=True, exist_ok=True)
    lock = workdir_lock.held(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        return _train_in(workdir, cfg, model, init_lines, train_set, val_set)


def _train_in(workdir: Path, cfg: TrainConfig, model, init_lines, train_set, val_set) -> dict:
    mesh = make_mesh()
    data_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    workdirs.claim_workdir(workdir, cfg, model)
    for line in init_lines:
        print(line)
    steps_per_epoch = len(train_set) // cfg.batch_size
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, model, steps_per_epoch), wrt=nnx.Param)
    nnx.update((model, optimizer), jax.device_put(nnx.state((model, optimizer)), replicated))
    train_step, eval_step = make_steps(cfg)
    train_step = Announced(train_step, "the train step")
    eval_step = Announced(eval_step, "the eval step")
    lr_at = learning_rate(cfg, steps_per_epoch)

    periodic, best = workdirs.checkpoint_managers(workdir, cfg.keep)
    meta = workdirs.restore_checkpoint(periodic, model, optimizer)
    step = meta["step"] if meta else 0
    epoch_losses = list(meta["epoch_losses"]) if meta else []  # this epoch's, before the checkpoint
    skipped = meta.get("skipped", 0) if meta else 0  # steps skipped as non-finite (on_nonfinite=skip)
    if meta:
        print(f"resumed from {workdir / 'checkpoints'} at step {step}")
    checkpoint_every = cfg.checkpoint_every or steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    last_step = min(total_steps, cfg.stop_at_step or total_steps)

    log = reporting.Logger(workdir, enabled=jax.process_index() == 0)
    stop = {"requested": False}
    previous_handler = signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    summary: dict[str, Any] = {}
    rate = 0.0  # images/s of the latest epoch, first step to last, read-backs included

    def validate_if_due():
        """Validate a finished epoch not yet in metrics.jsonl (also one whose run stopped
        between its last step and its validation)."""
        nonlocal summary, epoch_losses
        epoch = step // steps_per_epoch
        if step == 0 or step % steps_per_epoch:
            return
        logged = {r["epoch"]: r for r in reporting.read_metrics(workdir)}
        if epoch in logged:  # validated before a kill: the same model, the same record
            summary = logged[epoch]
        else:
            summary = {"epoch": epoch, "step": step, "train_loss": float(np.mean(epoch_losses)),
                       **validate(model, eval_step, val_set, cfg, data_sharding)}
            log.epoch(summary)
            faults.point("logged")
        epoch_losses = []
        if step not in best.all_steps():  # a rerun may validate a step saved before
            workdirs.save_checkpoint(best, step, model, None, {"step": step}, {"miou": summary["miou"]})

    try:
        validate_if_due()
        while step < last_step and not stop["requested"]:
            epoch, first = divmod(step, steps_per_epoch)
            if first == 0:
                epoch_losses = []
            rows = cfg.batch_size // jax.process_count()
            samples = pipeline.epoch_samples(
                train_set, cfg.batch_size, epoch=epoch, seed=cfg.seed,
                process_index=jax.process_index(), process_count=jax.process_count(),
                augment=augment.pipeline(cfg.augment))
            batches = pipeline.prefetched(samples, rows, first, cfg.data_threads)
            bar = log.progress(range(first, steps_per_epoch), epoch, cfg.progress)
            pending = []  # losses still on the device: read back every log_every steps
            seen, started = 0, time.perf_counter()
            for index, batch in zip(bar, batches):
                pending.append(train_step(model, optimizer, *global_batch(batch, data_sharding)))
                faults.point("step")
                step += 1
                seen += cfg.batch_size
                checkpoint_due = (step % checkpoint_every == 0 or step == last_step
                                  or stop["requested"])
                if step % cfg.log_every == 0 or index == steps_per_epoch - 1 or checkpoint_due:
                    read = [float(to_host(loss)) for loss in pending]
                    pending = []
                    bad = [(step - len(read) + i + 1, v) for i, v in enumerate(read)
                           if not math.isfinite(v)]
                    if bad and cfg.on_nonfinite == "stop":
                        raise NonFiniteLossError(bad[0], periodic.latest_step(), workdir)
                    skipped += len(bad)
                    epoch_losses += [v for v in read if math.isfinite(v)]
                    rate, lr = seen / (time.perf_counter() - started), float(lr_at(step))
                    last = epoch_losses[-1] if epoch_losses else math.nan
                    bar.set_postfix(loss=f"{last:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
                    log.scalars(step, {"train/loss": last, "train/lr": lr,
                                       "train/images_per_s": rate, "train/skipped_steps": skipped})
                if checkpoint_due and not bool(all_finite(nnx.state(model))):
                    raise NonFiniteLossError((step, math.nan), periodic.latest_step(), workdir,
                                             "the parameters are not finite")
                if checkpoint_due:
                    workdirs.save_checkpoint(periodic, step, model, optimizer,
                                    {"step": step, "epoch_losses": epoch_losses,
                                     "skipped": skipped})
                    faults.point("checkpoint")
                if step == last_step or stop["requested"]:
                    break
            validate_if_due()
        if stop["requested"]:
            print(f"interrupted: checkpoint saved at step {step} in {workdir / 'checkpoints'}")
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        try:
            for manager in (periodic, best):
                with workdirs.checkpoint_writes(manager):
                    manager.wait_until_finished()
        finally:
            for manager in (periodic, best):
                with contextlib.suppress(Exception):  # a failed write is reported above
                    manager.close()
            log.close()
    if step == total_steps and jax.process_count() == 1:  # pictures need the whole model here
        faults.point("pictures")
        log.pictures(model, val_set, cfg)
    summary["model"] = model
    summary["train_images_per_s"] = rate
    summary["interrupted"] = stop["requested"]
    summary["skipped_steps"] = skipped
    summary["skipped_samples"] = sum(len(getattr(d, "skipped", {})) for d in (train_set, val_set))
    return summary
