"""Training: jit-compiled and data-parallel over every device of every process.

Sections: config, mesh, data, model and optimizer, steps, checkpoints, loop. The batch is
sharded `P("data")` over `jax.make_mesh((n,), ("data",))`, the state replicated; so under
`nnx.jit` BatchNorm statistics, the loss and the metrics are global, and one device, N
simulated CPU devices and N hosts run the same program.
"""

import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import unet_jax
from unet_jax import data as data_lib
from unet_jax import losses, metrics
from unet_jax.inference import inference_jit

# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    arch: str = "imgseg_unet"  # registered arch name (unet-jax list)
    model: dict = dataclasses.field(default_factory=dict)  # arch options, e.g. {"base_width": 16}
    num_classes: int = 4  # classes of the data, background included; 1 channel for "bce"
    init_from: str = ""  # torch checkpoint (.pth/.safetensors) or saved JAX model dir to start from
    backbone_weights: str = ""  # torchvision ImageNet file for vgg16_unet / resnet50_unet
    data: str = "synthetic"  # synthetic | folder:PATH (images/, masks/) | tfds:NAME
    image_size: int = 64  # training images are image_size x image_size
    train_samples: int = 256  # synthetic only: samples in the training split
    val_samples: int = 64  # synthetic only: samples in the validation split
    batch_size: int = 16  # global batch, split evenly over all devices
    epochs: int = 10  # passes over the training split
    optimizer: str = "adamw"  # sgd | adam | adamw
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd momentum (0 disables it)
    nesterov: bool = False  # sgd Nesterov momentum
    weight_decay: float = 1e-4  # decoupled for adamw, added to the gradient for sgd/adam
    schedule: str = "cosine"  # constant | step | cosine | poly
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay
    step_epochs: int = 50  # step schedule: decay every step_epochs (torch StepLR step_size)
    step_gamma: float = 0.1  # step schedule: decay factor (torch StepLR gamma)
    poly_power: float = 0.9  # poly schedule: lr * (1 - t/T)^power
    clip_norm: float = 0.0  # clip gradients to this global norm (0 disables)
    freeze_backbone_epochs: int = 0  # keep the vgg/resnet backbone fixed for these epochs
    loss: str = "ce"  # weighted sum of ce, bce, dice, focal, e.g. "ce+0.5*dice"
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
    coordinator: str = ""  # multi-host: coordinator host:port (or JAX's environment variables)
    num_processes: int = 0  # multi-host: number of processes (0: from the environment)
    process_id: int = -1  # multi-host: this process (-1: from the environment)

    def __post_init__(self):
        choices = {"optimizer": ("sgd", "adam", "adamw"), "dtype": ("float32", "bfloat16"),
                   "schedule": ("constant", "step", "cosine", "poly")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        losses.parse_loss(self.loss)


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


def make_datasets(cfg: TrainConfig) -> tuple[data_lib.Dataset, data_lib.Dataset]:
    kind, _, arg = cfg.data.partition(":")
    size = dict(height=cfg.image_size, width=cfg.image_size)
    n_classes = max(cfg.num_classes, 2)
    if kind == "synthetic":
        return (data_lib.Shapes(cfg.train_samples, num_classes=n_classes, seed=cfg.seed, **size),
                data_lib.Shapes(cfg.val_samples, num_classes=n_classes, seed=cfg.seed + 1, **size))
    if kind == "folder":
        root = Path(arg)
        return (data_lib.ImageFolders(str(root / "train"), n_classes, **size),
                data_lib.ImageFolders(str(root / "val"), n_classes, **size))
    if kind == "tfds":
        return (data_lib.TFDS(arg, "train", n_classes, **size),
                data_lib.TFDS(arg, "test", n_classes, **size))
    raise ValueError(f"data must be synthetic, folder:PATH or tfds:NAME, got {cfg.data!r}")


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated array's value, also when other processes hold parts of it."""
    return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))


def global_batch(batch: dict, sharding: NamedSharding) -> tuple[jax.Array, jax.Array]:
    """This process's rows of the global batch, assembled into global sharded arrays."""
    n, i = jax.process_count(), jax.process_index()
    rows = len(batch["image"]) // n
    local = {k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}
    return (jax.make_array_from_process_local_data(sharding, local["image"]),
            jax.make_array_from_process_local_data(sharding, local["mask"]))


# ----------------------------------------------------------------------------- model and optimizer


def make_model(cfg: TrainConfig) -> nnx.Module:
    options = dict(cfg.model, num_classes=cfg.num_classes)
    if cfg.init_from and Path(cfg.init_from).is_dir():
        model = unet_jax.load(cfg.init_from, arch=cfg.arch)
    elif cfg.init_from:
        model = unet_jax.load_torch(cfg.init_from, arch=cfg.arch, **options)
    else:
        if cfg.backbone_weights:
            options["backbone_weights"] = cfg.backbone_weights
        model = unet_jax.create_model(cfg.arch, seed=cfg.seed, **options)
    model.train()
    return model


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


def forward(model: nnx.Module, images: jax.Array, dtype, remat: bool):
    """`model(images)` computed in `dtype` from float32 parameters, optionally
    rematerialised; BatchNorm statistics stay float32 and are written back to `model`."""
    if dtype == jnp.float32 and not remat:
        return model(images)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply(params, rest, images):
        params = jax.tree.map(lambda p: p.astype(dtype), params)
        m = nnx.merge(graphdef, params, rest)
        return m(images.astype(dtype)), nnx.state(m, nnx.BatchStat)

    if remat:  # keep conv outputs, recompute BatchNorm/ReLU/concat in the backward pass
        apply = jax.checkpoint(apply, policy=jax.checkpoint_policies.dots_saveable)
    out, stats = apply(params, rest, images)
    nnx.update(model, stats)
    return out


def make_steps(cfg: TrainConfig):
    """(train_step, eval_step), jit-compiled; model and optimizer are donated."""
    terms = losses.parse_loss(cfg.loss)
    dtype = jnp.dtype(cfg.dtype)
    head_weights = tuple(cfg.head_weights) or None
    n_classes = max(cfg.num_classes, 2)

    @nnx.jit(donate_argnames=("model", "optimizer"), graph=False)
    def train_step(model, optimizer, images, labels):
        def loss_fn(model):
            out = forward(model, images, dtype, cfg.remat)
            return losses.segmentation_loss(out, labels, terms, cfg.ignore_index, head_weights)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @inference_jit
    def eval_step(model, images, labels):
        out = forward(model, images, dtype, False)
        loss = losses.segmentation_loss(out, labels, terms, cfg.ignore_index, head_weights)
        logits = (out[-1] if isinstance(out, list) else out).astype(jnp.float32)
        target = losses.center_crop_mask(labels, logits.shape[1], logits.shape[2])
        cm = metrics.confusion_matrix(metrics.predictions(logits), target, n_classes,
                                      cfg.ignore_index)
        return loss, cm

    return train_step, eval_step


def evaluate(model, eval_step, dataset, cfg: TrainConfig, sharding) -> dict:
    model.eval()
    cm, total, count = None, 0.0, 0  # the confusion matrix stays on device until the end
    for batch in data_lib.batches(dataset, cfg.batch_size, epoch=0, seed=cfg.seed, shuffle=False):
        loss, batch_cm = eval_step(model, *global_batch(batch, sharding))
        cm = batch_cm if cm is None else cm + batch_cm
        total, count = total + float(to_host(loss)), count + 1
    model.train()
    return {"val_loss": total / max(count, 1), **metrics.summarize(to_host(cm))}


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_managers(workdir: Path, keep: int) -> tuple[ocp.CheckpointManager, ...]:
    """(periodic, best-by-val-mIoU) managers, both saving asynchronously."""
    periodic = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True))
    best = ocp.CheckpointManager(
        workdir / "best",
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["miou"],
                                             best_mode="max", enable_async_checkpointing=True))
    return periodic, best


def save_checkpoint(manager, step: int, model, optimizer, meta: dict, metrics_=None) -> None:
    state = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)), metrics=metrics_)


def restore_checkpoint(manager, model, optimizer) -> dict | None:
    """Restore the latest checkpoint into `model`/`optimizer`; its metadata, or None."""
    step = manager.latest_step()
    if step is None:
        return None
    target = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                            target)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    nnx.update(model, restored.state["model"])
    nnx.update(optimizer, restored.state["optimizer"])
    return restored.meta


# ----------------------------------------------------------------------------- loop


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (resuming from `workdir` when it holds a checkpoint); the last epoch's metrics."""
    maybe_initialize_distributed(cfg)
    workdir = Path(cfg.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh()
    data_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    if cfg.batch_size % jax.device_count():
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the "
                         f"{jax.device_count()} devices")

    train_set, val_set = make_datasets(cfg)
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_set)} samples, fewer than one "
                         f"batch of {cfg.batch_size}")
    model = make_model(cfg)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, model, steps_per_epoch), wrt=nnx.Param)
    nnx.update((model, optimizer), jax.device_put(nnx.state((model, optimizer)), replicated))
    train_step, eval_step = make_steps(cfg)
    lr_at = learning_rate(cfg, steps_per_epoch)

    periodic, best = checkpoint_managers(workdir, cfg.keep)
    meta = restore_checkpoint(periodic, model, optimizer)
    step = meta["step"] if meta else 0
    epoch_losses = list(meta["epoch_losses"]) if meta else []  # this epoch's, before the checkpoint
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
    try:
        while step < last_step and not stop["requested"]:
            epoch, first = divmod(step, steps_per_epoch)
            loader = data_lib.batches(train_set, cfg.batch_size, epoch=epoch, seed=cfg.seed)
            bar = log.progress(range(first, steps_per_epoch), epoch, cfg.progress)
            seen, started = 0, time.perf_counter()
            for index in bar:
                loss = train_step(model, optimizer, *global_batch(loader[index], data_sharding))
                step += 1
                seen += cfg.batch_size
                epoch_losses.append(float(to_host(loss)))
                if step % 10 == 0 or index == steps_per_epoch - 1:
                    rate = seen / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}", lr=f"{float(lr_at(step)):.2e}",
                                    img_s=f"{rate:.1f}")
                    log.scalars(step, {"train/loss": epoch_losses[-1], "train/lr": float(lr_at(step)),
                                       "train/images_per_s": rate})
                if step % checkpoint_every == 0 or step == last_step or stop["requested"]:
                    save_checkpoint(periodic, step, model, optimizer,
                                    {"step": step, "epoch_losses": epoch_losses})
                if step == last_step or stop["requested"]:
                    break
            if step % steps_per_epoch == 0:  # a finished epoch: validate
                summary = {"epoch": epoch + 1, "step": step,
                           "train_loss": float(np.mean(epoch_losses)),
                           **evaluate(model, eval_step, val_set, cfg, data_sharding)}
                log.epoch(summary)
                epoch_losses = []
                save_checkpoint(best, step, model, optimizer, {"step": step},
                                {"miou": summary["miou"]})
        if stop["requested"]:
            print(f"interrupted: checkpoint saved at step {step} in {workdir / 'checkpoints'}")
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        periodic.wait_until_finished()
        best.wait_until_finished()
        periodic.close()
        best.close()
        log.close()
    if step == total_steps and jax.process_count() == 1:  # pictures need the whole model here
        log.pictures(model, val_set, cfg)
    summary["model"] = model
    summary["interrupted"] = stop["requested"]
    return summary


def dump_config(cfg: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2)


# ----------------------------------------------------------------------------- command line


def field_comments() -> dict[str, str]:
    """{field: its one-line comment} read from TrainConfig's source."""
    import inspect
    import re
    found = re.findall(r"^    (\w+): [^=]+=.*?  # (.+)$", inspect.getsource(TrainConfig), re.M)
    return dict(found)


def add_flags(parser) -> None:
    """One flag per TrainConfig field (`--batch-size 32`, `--remat/--no-remat`,
    `--model base_width=16`), plus `--set field=value`."""
    import argparse
    comments = field_comments()
    for f in dataclasses.fields(TrainConfig):
        flag, default = "--" + f.name.replace("_", "-"), TrainConfig.__dataclass_fields__[f.name]
        value = default.default if default.default is not dataclasses.MISSING else default.default_factory()
        help_ = f"{comments.get(f.name, '')} (default: {value!r})"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(value, dict):
            parser.add_argument(flag, action="append", metavar="KEY=VALUE", help=help_)
        elif isinstance(value, tuple):
            parser.add_argument(flag, type=float, nargs="*", help=help_)
        else:
            parser.add_argument(flag, type=type(value), help=help_)
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="set any field, e.g. --set lr=0.01")


def config_from_args(args, parse_value) -> TrainConfig:
    values = {}
    for f in dataclasses.fields(TrainConfig):
        given = getattr(args, f.name)
        if given is None:
            continue
        if f.name == "model":
            given = {k: parse_value(v) for k, _, v in (p.partition("=") for p in given)}
        values[f.name] = tuple(given) if f.name == "head_weights" else given
    for pair in args.set:
        key, _, value = pair.partition("=")
        if key not in TrainConfig.__dataclass_fields__:
            raise ValueError(f"--set {key}: no such field; fields: "
                             f"{', '.join(TrainConfig.__dataclass_fields__)}")
        values[key] = parse_value(value)
    return TrainConfig(**values)
