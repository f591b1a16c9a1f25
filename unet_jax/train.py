"""Training: jit-compiled and data-parallel over every device of every process.

Sections: config, mesh, data, model and optimizer, steps, checkpoints, loop. The batch is
sharded `P("data")` over `jax.make_mesh((n,), ("data",))`, the state replicated; so under
`nnx.jit` BatchNorm statistics, the loss and the metrics are global, and one device, N
simulated CPU devices and N hosts run the same program.
"""

import contextlib
import dataclasses
import functools
import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import unet_jax
from unet_jax import augment, faults, layouts, losses, metrics, presets, registry, saving, workdir_lock
from unet_jax import data as data_lib
from unet_jax.compile_notice import Announced
from unet_jax.inference import inference_jit

# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    arch: str = ""  # registered arch name (unet-jax list); "": the init_from model's, else imgseg_unet
    model: dict = dataclasses.field(default_factory=dict)  # arch options (unet-jax list names them)
    num_classes: int = 0  # classes incl. background (1 channel for "bce"); 0: init_from's, else 4
    init_from: str = ""  # torch checkpoint, saved model or training workdir to start from (fine-tune)
    backbone_weights: str = ""  # torchvision ImageNet file for vgg16_unet / resnet50_unet
    data: str = "synthetic"  # synthetic | folder:PATH (layout detected) | LAYOUT:PATH | tfds:NAME
    image_size: int = 0  # training images are image_size x image_size (0: the arch's default)
    augment: str = ""  # ops joined by + or a preset (unet_jax.augment), e.g. scale(0.5,2)+crop+hflip+hsv
    preprocess: str = ""  # input preset ("": init_from's recorded one, else the arch's upstream one)
    out_of_range: str = "error"  # mask values >= num_classes (not ignore_index): error | ignore
    train_samples: int = 256  # synthetic only: samples in the training split
    val_samples: int = 64  # synthetic only: samples in the validation split
    batch_size: int = 16  # global batch, split evenly over all devices
    epochs: int = 10  # passes over the training split
    optimizer: str = "adamw"  # sgd | adam | adamw
    lr: float = 0.0  # peak learning rate (0: the arch's default)
    momentum: float = 0.9  # sgd momentum (0 disables it)
    nesterov: bool = False  # sgd Nesterov momentum
    weight_decay: float = 1e-4  # decoupled for adamw, added to the gradient for sgd/adam
    schedule: str = "cosine"  # constant | step | cosine | poly
    warmup_epochs: float = -1.0  # linear warm-up before the cosine decay (-1: the arch's default)
    step_epochs: int = 50  # step schedule: decay every step_epochs (torch StepLR step_size)
    step_gamma: float = 0.1  # step schedule: decay factor (torch StepLR gamma)
    poly_power: float = 0.9  # poly schedule: lr * (1 - t/T)^power
    clip_norm: float = 0.0  # clip gradients to this global norm (0 disables)
    freeze_backbone_epochs: int = 0  # keep the vgg/resnet backbone fixed for these epochs
    loss: str = ""  # weighted sum of ce, bce, dice, focal, e.g. "ce+0.5*dice" ("": the arch's default)
    head_weights: tuple = ()  # deep supervision: weight per head (empty: mean of the heads)
    ignore_index: int = 255  # mask value excluded from loss and metrics
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (params, BN stats, loss stay f32)
    remat: bool = False  # recompute activations in the backward pass (saves memory)
    seed: int = 0  # model init, data order and synthetic data
    workdir: str = "runs/train"  # checkpoints, metrics.jsonl, TensorBoard events and pictures
    checkpoint_every: int = 0  # steps between periodic checkpoints (0: every epoch)
    keep: int = 2  # periodic checkpoints kept (the best by val mIoU is kept separately)
    stop_at_step: int = 0  # stop (with a checkpoint) after this many steps; 0 runs to the end
    progress: bool = True  # show a progress bar
    log_every: int = 10  # steps between loss read-backs (progress bar, TensorBoard, non-finite checks)
    on_nonfinite: str = "stop"  # a NaN/Inf loss or gradient: stop (an error) | skip (the step, counted)
    bad_files: str = "error"  # an unreadable image/mask file: error | skip (all files checked before step 1)
    data_threads: int = 4  # background threads decoding and augmenting batches (0: none)
    coordinator: str = ""  # multi-host: coordinator host:port (or JAX's environment variables)
    num_processes: int = 0  # multi-host: number of processes (0: from the environment)
    process_id: int = -1  # multi-host: this process (-1: from the environment)

    def __post_init__(self):
        choices = {"optimizer": ("sgd", "adam", "adamw"), "dtype": ("float32", "bfloat16"),
                   "schedule": ("constant", "step", "cosine", "poly"),
                   "on_nonfinite": ("stop", "skip"), "bad_files": ("error", "skip")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        if self.loss:
            losses.parse_loss(self.loss)
        if self.preprocess:
            presets.get(self.preprocess)
        augment.parse(self.augment)


def maybe_initialize_distributed(cfg: TrainConfig) -> None:
    """jax.distributed.initialize from the flags, or from the environment when set there."""
    if cfg.coordinator or cfg.num_processes:
        if jax.config.jax_platforms in (None, "", "cpu"):  # CPU collectives across processes
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(cfg.coordinator or None, cfg.num_processes or None,
                                   None if cfg.process_id < 0 else cfg.process_id)


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D "data" mesh over every device of every process, sharded automatically by jit."""
    return jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))


# ----------------------------------------------------------------------------- data


FILE_LAYOUTS = ("folder", *layouts.READERS)  # data kinds read from files (folder: detected)


def make_datasets(cfg: TrainConfig, channels: int = 3) -> tuple[data_lib.Dataset, data_lib.Dataset]:
    """(train, val) datasets of `cfg.data` at the training size, images of `channels`."""
    kind, _, arg = cfg.data.partition(":")
    size = dict(height=cfg.image_size, width=cfg.image_size)
    n_classes = max(cfg.num_classes, 2)
    if kind == "synthetic":
        return (data_lib.Shapes(cfg.train_samples, num_classes=n_classes, seed=cfg.seed,
                                channels=channels, **size),
                data_lib.Shapes(cfg.val_samples, num_classes=n_classes, seed=cfg.seed + 1,
                                channels=channels, **size))
    if kind in FILE_LAYOUTS and arg:
        found = layouts.from_spec(cfg.data)
        fit = presets.get(cfg.preprocess or "unit").training_fit
        return tuple(data_lib.FileDataset(tuple(found.splits[s]), n_classes, channels=channels,
                                          binary=found.binary, fit=fit, out_of_range=cfg.out_of_range,
                                          ignore_index=cfg.ignore_index, **size)
                     for s in ("train", "val"))
    if kind == "tfds":
        return (data_lib.TFDS(arg, "train", n_classes, **size),
                data_lib.TFDS(arg, "test", n_classes, **size))
    raise ValueError(f"data must be synthetic, {':PATH, '.join(FILE_LAYOUTS)}:PATH or tfds:NAME, "
                     f"got {cfg.data!r}")


def skipping_bad_files(dataset: data_lib.Dataset, split: str, threads: int) -> data_lib.Dataset:
    """bad_files=skip: a file dataset less its unreadable pairs (named, counted, before the
    first step), any sample failing later replaced by the next one (named, counted)."""
    if isinstance(dataset, data_lib.FileDataset):
        total = len(dataset)
        dataset, problems = data_lib.without_bad_files(dataset, threads)
        if problems:
            print(f"skipped {len(problems)} of {total} {split} samples (bad files):")
            for line in problems:
                print(f"  - {line}")
    return data_lib.SkippingBadSamples(dataset)


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated array's value, also when other processes hold parts of it."""
    return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))


def global_batch(local: dict, sharding: NamedSharding) -> tuple[jax.Array, jax.Array]:
    """This process's rows of the global batch (uint8 images, masks), assembled into global
    sharded arrays; the transfer is asynchronous, so it overlaps the step running."""
    return (jax.make_array_from_process_local_data(sharding, local["image"]),
            jax.make_array_from_process_local_data(sharding, local["mask"]))


# ----------------------------------------------------------------------------- model and optimizer


DEFAULT_ARCH, DEFAULT_CLASSES = "imgseg_unet", 4


def resolve(cfg: TrainConfig) -> tuple[TrainConfig, nnx.Module | None]:
    """`cfg` with every "from the arch / from init_from" default filled in, and the init_from
    model (read once here, as it decides the arch and class count)."""
    source = None
    if cfg.init_from:
        from unet_jax.sources import adaptable_names, open_model
        # options the weights cannot show (deep_supervision, ...) apply to the source itself
        fixed = {k: v for k, v in cfg.model.items() if k not in adaptable_names()}
        source = open_model(cfg.init_from, cfg.arch or None, **fixed)[0]
    arch = cfg.arch or (registry.arch_of_config(source.config).name if source else DEFAULT_ARCH)
    spec = registry.get_arch(arch)
    num_classes = cfg.num_classes or (
        registry.uniform_option(source, "num_classes") if source else DEFAULT_CLASSES)
    arch_defaults = registry.train_defaults(arch)
    filled = dict(arch=arch, num_classes=num_classes,
                  preprocess=cfg.preprocess or (presets.recorded(source) if source else spec.preprocess))
    for name, unset in (("image_size", 0), ("lr", 0.0), ("warmup_epochs", -1.0), ("loss", "")):
        if getattr(cfg, name) == unset:
            filled[name] = arch_defaults[name]
    return dataclasses.replace(cfg, **filled), source


def make_model(cfg: TrainConfig, source: nnx.Module | None = None) -> tuple[nnx.Module, list[str]]:
    """The model to train (in training mode) and lines saying how it was initialised.

    From `source` (the init_from model), its config with `cfg.model` and `num_classes`
    applied: changed classes or input channels re-initialise exactly the layers they
    reshape; any other change is refused. Otherwise freshly initialised, seeded."""
    options = dict(cfg.model, num_classes=cfg.num_classes)
    if source is None:
        if cfg.backbone_weights:
            options["backbone_weights"] = cfg.backbone_weights
        model = unet_jax.create_model(cfg.arch, seed=cfg.seed, **options)
        model.train()
        return presets.record(model, cfg.preprocess, (cfg.image_size,) * 2), []
    from unet_jax.sources import adapt, adaptable_names
    spec = registry.arch_of_config(source.config)
    options = {spec.uniform.get(k, k): v for k, v in options.items()}
    adaptable = adaptable_names(spec)
    differs = {k: (getattr(source.config, k, None), v) for k, v in options.items()
               if k not in adaptable and getattr(source.config, k, None) != v}
    if differs:
        raise ValueError(f"--model options differ from the init_from model {cfg.init_from} "
                         + ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in differs.items())
                         + "; these change its weights' shapes (only num_classes / in_channels "
                         "can be changed by fine-tuning)")
    model, lines = adapt(source, seed=cfg.seed,
                         **{k: v for k, v in options.items() if k in adaptable})
    model.train()
    return (presets.record(model, cfg.preprocess, (cfg.image_size,) * 2),
            [f"initialised from {cfg.init_from}"] + lines)


def backbone_names(model: nnx.Module) -> tuple[str, ...]:
    """Top-level attributes holding the pretrained backbone (what upstream freezes)."""
    return tuple(n for n in ("vgg", "resnet") if hasattr(model, n) and getattr(model, n) is not None)


def learning_rate(cfg: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "constant":
        return optax.constant_schedule(cfg.lr)
    if cfg.schedule == "step":  # torch StepLR(step_size, gamma), stepped once per epoch
        return optax.exponential_decay(cfg.lr, cfg.step_epochs * steps_per_epoch, cfg.step_gamma,
                                       staircase=True)
    if cfg.schedule == "poly":
        return optax.polynomial_schedule(cfg.lr, 0.0, cfg.poly_power, total)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(0.0 if warmup else cfg.lr, cfg.lr, warmup,
                                              max(total, warmup + 1))


def freeze_for(inner: optax.GradientTransformation, frozen: tuple[str, ...], steps: int
               ) -> optax.GradientTransformation:
    """Zero the gradients and updates of parameters under the top-level attributes `frozen`
    for the first `steps` steps (upstream's `freeze_backbone()` / `unfreeze_backbone()`)."""
    if not frozen or steps <= 0:
        return inner

    def mask(tree, active):
        def zero(path, leaf):
            return jnp.where(active, jnp.zeros_like(leaf), leaf) if path[0].key in frozen else leaf
        return jax.tree_util.tree_map_with_path(zero, tree)

    def init(params):
        return {"count": jnp.zeros([], jnp.int32), "inner": inner.init(params)}

    def update(updates, state, params=None):
        active = state["count"] < steps
        updates, inner_state = inner.update(mask(updates, active), state["inner"], params)
        return mask(updates, active), {"count": state["count"] + 1, "inner": inner_state}

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: TrainConfig, model: nnx.Module, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
    lr = learning_rate(cfg, steps_per_epoch)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    if cfg.optimizer == "adamw":
        parts.append(optax.adamw(lr, weight_decay=cfg.weight_decay))
    else:
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay))
        parts.append(optax.adam(lr) if cfg.optimizer == "adam" else
                     optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    tx = optax.chain(*parts)
    if cfg.freeze_backbone_epochs:
        names = backbone_names(model)
        if not names:
            raise ValueError(f"freeze_backbone_epochs needs a backbone; {cfg.arch} has none "
                             "(vgg16_unet and resnet50_unet do)")
        tx = freeze_for(tx, names, cfg.freeze_backbone_epochs * steps_per_epoch)
    return tx


# ----------------------------------------------------------------------------- steps


def forward(model: nnx.Module, images: jax.Array, dtype, remat: bool, preset: presets.Preset):
    """`model(preset.normalize(images))` computed in `dtype`, optionally rematerialised. Parameters stay
    float32 (each layer casts them to the activations' dtype), BatchNorm statistics too and
    are written back to `model`."""
    x = preset.normalize(images, dtype)
    if not remat:
        return model(x)
    graphdef, state = nnx.split(model)

    @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.dots_saveable)
    def apply(state, x):  # keep conv outputs, recompute BatchNorm/ReLU/concat in the backward
        m = nnx.merge(graphdef, state)
        return m(x), nnx.state(m, nnx.BatchStat)

    out, stats = apply(state, x)
    nnx.update(model, stats)
    return out


def step_functions(cfg: TrainConfig):
    """(train_step(model, optimizer, images, labels) -> loss, updating both in place;
    eval_step(model, images, labels) -> (loss, confusion matrix)), not yet compiled."""
    terms = losses.parse_loss(cfg.loss)
    dtype = jnp.dtype(cfg.dtype)
    preset = presets.get(cfg.preprocess or "unit")
    head_weights = tuple(cfg.head_weights) or None
    n_classes = max(cfg.num_classes, 2)

    def train_step(model, optimizer, images, labels):
        """The loss, NaN where it is not finite; with `on_nonfinite` "skip" also where any
        gradient is not, and such a step leaves model and optimizer as they were. (In "stop"
        mode a non-finite gradient with a finite loss is caught by `all_finite` before the
        next checkpoint, and by the next step's loss.)"""
        def loss_fn(model):
            out = forward(model, images, dtype, cfg.remat, preset)
            return losses.segmentation_loss(out, labels, terms, cfg.ignore_index, head_weights)

        # a copy of the values: the State's Variables are the model's own, updated below
        before = (jax.tree.map(lambda v: v, nnx.state((model, optimizer)))
                  if cfg.on_nonfinite == "skip" else None)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        finite = jnp.isfinite(loss)
        if before is not None:  # per-gradient checks cost ~30% of a small step: skip mode only
            finite &= jnp.all(jnp.stack([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
        optimizer.update(model, grads)
        if before is not None:
            after = nnx.state((model, optimizer))
            nnx.update((model, optimizer),
                       jax.tree.map(lambda a, b: jnp.where(finite, a, b), after, before))
        return jnp.where(finite, loss, jnp.nan)

    def eval_step(model, images, labels):
        out = forward(model, images, dtype, False, preset)
        loss = losses.segmentation_loss(out, labels, terms, cfg.ignore_index, head_weights)
        logits = (out[-1] if isinstance(out, list) else out).astype(jnp.float32)
        target = losses.center_crop_mask(labels, logits.shape[1], logits.shape[2])
        cm = metrics.confusion_matrix(metrics.predictions(logits), target, n_classes,
                                      cfg.ignore_index)
        return loss, cm

    return train_step, eval_step


def make_steps(cfg: TrainConfig):
    """(train_step, eval_step), jit-compiled; model and optimizer are donated."""
    train_step, eval_step = step_functions(cfg)
    return (nnx.jit(train_step, donate_argnames=("model", "optimizer"), graph=False),
            inference_jit(eval_step))


def padded_batches(dataset, batch_size: int, ignore_index: int, threads: int = 0,
                   process_index: int = 0, process_count: int = 1):
    """(this process's rows, real samples in the global batch) over every sample in order;
    the last partial batch is padded with zero images and `ignore_index` masks, so it is
    scored without a new compiled shape."""
    rows = batch_size // process_count
    n_batches = -(-len(dataset) // batch_size)
    image, mask = dataset[0]
    blank = (np.zeros_like(image), np.full_like(mask, ignore_index))

    def sample(q: int) -> dict:
        index = (q // rows) * batch_size + process_index * rows + q % rows
        image, mask = dataset[index] if index < len(dataset) else blank
        return {"image": image, "mask": mask}

    samples = grain.MapDataset.range(n_batches * rows).map(sample)
    for b, batch in enumerate(data_lib.prefetched(samples, rows, 0, threads)):
        yield batch, min(batch_size, len(dataset) - b * batch_size)


def evaluate(model, eval_step, dataset, cfg: TrainConfig, sharding) -> dict:
    """Loss (mean over samples) and metrics over every sample of `dataset`."""
    model.eval()
    cm, losses_ = None, []  # the confusion matrix and losses stay on device until the end
    for batch, real in padded_batches(dataset, cfg.batch_size, cfg.ignore_index, cfg.data_threads,
                                      jax.process_index(), jax.process_count()):
        loss, batch_cm = eval_step(model, *global_batch(batch, sharding))
        faults.point("validation")
        cm = batch_cm if cm is None else cm + batch_cm
        losses_.append((loss, real))
    model.train()  # read back once, at the end
    total = sum(float(to_host(loss)) * real for loss, real in losses_)
    return {"val_loss": total / len(dataset), **metrics.summarize(to_host(cm))}


# ----------------------------------------------------------------------------- start-up checks


def preflight(cfg: TrainConfig, model: nnx.Module, splits: dict) -> None:
    """Find every configuration and data problem before the first step: batch and device
    counts, split sizes, one sample per split (shapes, channels, mask values) and whether
    the arch takes the image size. Raises one ValueError listing all problems."""
    problems = []
    devices, processes = jax.device_count(), jax.process_count()
    if cfg.batch_size < 1 or cfg.batch_size % devices:
        problems.append(f"batch_size {cfg.batch_size} must be a positive multiple of the "
                        f"{devices} devices")
    if cfg.epochs < 1:
        problems.append(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.log_every < 1:
        problems.append(f"log_every must be >= 1, got {cfg.log_every}")
    channels = registry.uniform_option(model, "in_channels")
    n_classes = max(cfg.num_classes, 2)
    for name, dataset in splits.items():
        try:
            count = len(dataset)
        except (OSError, ValueError) as e:
            problems.append(f"{name} split: {e}")
            continue
        if count == 0 or (name == "train" and count < cfg.batch_size):
            problems.append(f"the {name} split has {count} samples, fewer than one batch of "
                            f"{cfg.batch_size}" if name == "train" else f"the {name} split is empty")
            continue
        try:
            image, mask = dataset[0]
        except (OSError, ValueError) as e:
            problems.append(f"{name} split, sample 0: {e}")
            continue
        size = (cfg.image_size, cfg.image_size)
        if image.shape != (*size, channels) or mask.shape != size:
            problems.append(f"{name} split, sample 0: image {image.shape} and mask {mask.shape}; "
                            f"the model needs images {(*size, channels)} and masks {size}")
        bad = np.unique(mask[(mask >= n_classes) & (mask != cfg.ignore_index)])
        if bad.size:
            problems.append(f"{name} split, sample 0: mask values {bad[:8].tolist()} are neither "
                            f"classes 0..{n_classes - 1} nor the ignore index {cfg.ignore_index}")
    try:
        graphdef, state = nnx.split(model)
        x = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, channels), jnp.float32)
        jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    except ValueError as e:
        problems.append(f"image_size {cfg.image_size}: {e}")
    if processes > 1 and cfg.batch_size % processes:
        problems.append(f"batch_size {cfg.batch_size} must split evenly over {processes} processes")
    if problems:
        raise ValueError("cannot start training:\n  - " + "\n  - ".join(problems))


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_managers(workdir: Path, keep: int) -> tuple[ocp.CheckpointManager, ...]:
    """(periodic, best-by-val-mIoU) managers, both saving asynchronously. Items: `model`
    (what `unet_jax.load(workdir)` reads), `optimizer` (periodic only) and `meta`."""
    periodic = ocp.CheckpointManager(
        workdir / saving.WHICH["latest"],
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True))
    best = ocp.CheckpointManager(
        workdir / saving.WHICH["best"],
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
            f"could not write a checkpoint in {manager.directory} ({saving.io_failure(e)}); "
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


def claim_workdir(workdir: Path, cfg: TrainConfig, model: nnx.Module) -> None:
    """Write `run.json` (arch, config, class count, training options) on a new workdir, or
    refuse a rerun whose arch, config or image size differ from the recorded ones."""
    record = {**saving.model_metadata(model), "image_size": cfg.image_size,
              "train": dataclasses.asdict(cfg)}
    path = workdir / saving.RUN
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("arch") == record["arch"]:  # as read back: fields added since filled in
            stored["config"] = dataclasses.asdict(saving.config_from_metadata(stored, path)[1])
        differ = [f"{k}: {stored.get(k)!r} in the workdir, {record[k]!r} now"
                  for k in RUN_IDENTITY if stored.get(k) != record[k]]
        if differ:
            raise ValueError(f"{workdir} holds a run of another model; resume it with the same "
                             "options or choose a new --workdir:\n  - " + "\n  - ".join(differ))
    elif jax.process_index() == 0:
        if any((workdir / d).exists() for d in saving.WHICH.values()):
            raise ValueError(f"{workdir} holds checkpoints but no {saving.RUN} (written by an "
                             "older unet-jax?); choose a new --workdir")
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(record, indent=2) + "\n")
        partial.rename(path)


# ----------------------------------------------------------------------------- loop


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (resuming from `workdir` when it holds a checkpoint); the last epoch's metrics.
    The workdir is locked for the run (`unet_jax.workdir_lock`)."""
    maybe_initialize_distributed(cfg)
    cfg, source = resolve(cfg)
    workdir = Path(cfg.workdir).absolute()
    model, init_lines = make_model(cfg, source)
    train_set, val_set = make_datasets(cfg, registry.uniform_option(model, "in_channels"))
    if cfg.bad_files == "skip":
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
    claim_workdir(workdir, cfg, model)
    for line in init_lines:
        print(line)
    steps_per_epoch = len(train_set) // cfg.batch_size
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, model, steps_per_epoch), wrt=nnx.Param)
    nnx.update((model, optimizer), jax.device_put(nnx.state((model, optimizer)), replicated))
    train_step, eval_step = make_steps(cfg)
    train_step = Announced(train_step, "the train step")
    eval_step = Announced(eval_step, "the eval step")
    lr_at = learning_rate(cfg, steps_per_epoch)

    periodic, best = checkpoint_managers(workdir, cfg.keep)
    meta = restore_checkpoint(periodic, model, optimizer)
    step = meta["step"] if meta else 0
    epoch_losses = list(meta["epoch_losses"]) if meta else []  # this epoch's, before the checkpoint
    skipped = meta.get("skipped", 0) if meta else 0  # steps skipped as non-finite (on_nonfinite=skip)
    if meta:
        print(f"resumed from {workdir / 'checkpoints'} at step {step}")
    checkpoint_every = cfg.checkpoint_every or steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    last_step = min(total_steps, cfg.stop_at_step or total_steps)

    from unet_jax import reporting
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
        from unet_jax.reporting import read_metrics
        logged = {r["epoch"]: r for r in read_metrics(workdir)}
        if epoch in logged:  # validated before a kill: the same model, the same record
            summary = logged[epoch]
        else:
            summary = {"epoch": epoch, "step": step, "train_loss": float(np.mean(epoch_losses)),
                       **evaluate(model, eval_step, val_set, cfg, data_sharding)}
            log.epoch(summary)
            faults.point("logged")
        epoch_losses = []
        if step not in best.all_steps():  # a rerun may validate a step saved before
            save_checkpoint(best, step, model, None, {"step": step}, {"miou": summary["miou"]})

    try:
        validate_if_due()
        while step < last_step and not stop["requested"]:
            epoch, first = divmod(step, steps_per_epoch)
            if first == 0:
                epoch_losses = []
            rows = cfg.batch_size // jax.process_count()
            samples = data_lib.epoch_samples(
                train_set, cfg.batch_size, epoch=epoch, seed=cfg.seed,
                process_index=jax.process_index(), process_count=jax.process_count(),
                augment=augment.pipeline(cfg.augment))
            batches = data_lib.prefetched(samples, rows, first, cfg.data_threads)
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
                    save_checkpoint(periodic, step, model, optimizer,
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
                with checkpoint_writes(manager):
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


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every floating value in `tree` is finite (one device-side reduction)."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class NonFiniteLossError(RuntimeError):
    """Training stopped at a non-finite loss or gradient; the bad state was not saved."""

    def __init__(self, first_bad: tuple[int, float], last_good: int | None, workdir: Path,
                 what: str = ""):
        step, value = first_bad
        kept = (f"the last good checkpoint, step {last_good} in {workdir / saving.WHICH['latest']}, "
                "is kept" if last_good is not None else "no checkpoint had been saved yet")
        what = what or f"the loss is {value}"
        super().__init__(f"step {step}: {what} (a non-finite loss or gradient); "
                         f"training stopped and nothing after step {step - 1} was saved; {kept}. "
                         "Lower --lr, clip with --clip-norm, or skip such steps with "
                         "--on-nonfinite skip")


def dump_config(cfg: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2)


# ----------------------------------------------------------------------------- command line


def field_comments() -> dict[str, str]:
    """{field: its one-line comment} read from TrainConfig's source."""
    import inspect
    import re
    found = re.findall(r"^    (\w+): [^=]+=.*?  # (.+)$", inspect.getsource(TrainConfig), re.M)
    return dict(found)


def add_flags(parser, arch: str = "") -> None:
    """One flag per TrainConfig field (`--batch-size 32`, `--remat/--no-remat`,
    `--model base_width=16`), plus `--set field=value`. The help shows the arch-dependent
    defaults of `arch` (or of the default arch)."""
    import argparse
    comments = field_comments()
    name = arch if arch in registry.list_models() else DEFAULT_ARCH
    resolved = {"arch": f"{DEFAULT_ARCH} unless --init-from names another",
                "num_classes": f"{DEFAULT_CLASSES} unless --init-from has another count",
                **{k: f"{v!r} for {name}" for k, v in registry.train_defaults(name).items()}}
    for f in dataclasses.fields(TrainConfig):
        flag, default = "--" + f.name.replace("_", "-"), TrainConfig.__dataclass_fields__[f.name]
        value = default.default if default.default is not dataclasses.MISSING else default.default_factory()
        shown = resolved.get(f.name, repr(value))
        help_ = f"{comments.get(f.name, '')} (default: {shown})"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(value, dict):
            help_ = (f"{comments.get(f.name, '')}: KEY=VALUE (repeatable) or a JSON object, e.g. "
                     f"{flag} base_width=16 or {flag} '{{\"base_width\": 16}}' (default: {shown})")
            parser.add_argument(flag, action="append", metavar="KEY=VALUE", help=help_)
        elif isinstance(value, tuple):
            parser.add_argument(flag, type=float, nargs="*", help=help_)
        else:
            parser.add_argument(flag, type=type(value), help=help_)
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="set any field, e.g. --set lr=0.01")


def model_options(given: list[str], parse_value) -> dict:
    """`--model` values, merged in order: KEY=VALUE pairs and JSON objects."""
    options = {}
    for item in given:
        if item.lstrip().startswith("{"):
            try:
                value = json.loads(item)
            except json.JSONDecodeError as e:
                raise ValueError(f"--model {item}: not valid JSON ({e})") from None
            if not isinstance(value, dict):
                raise ValueError(f"--model {item}: a JSON object of options, not a "
                                 f"{type(value).__name__}")
            options.update(value)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model expects KEY=VALUE (e.g. base_width=16) or a JSON object "
                             f"(e.g. '{{\"base_width\": 16}}'), got {item!r}")
        options[key.strip()] = parse_value(value)
    return options


def config_from_args(args, parse_value) -> TrainConfig:
    values = {}
    for f in dataclasses.fields(TrainConfig):
        given = getattr(args, f.name)
        if given is None:
            continue
        if f.name == "model":
            given = model_options(given, parse_value)
        values[f.name] = tuple(given) if f.name == "head_weights" else given
    for pair in args.set:
        key, _, value = pair.partition("=")
        if key not in TrainConfig.__dataclass_fields__:
            raise ValueError(f"--set {key}: no such field; fields: "
                             f"{', '.join(TrainConfig.__dataclass_fields__)}")
        values[key] = parse_value(value)
    return TrainConfig(**values)
