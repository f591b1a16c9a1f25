"""The train and eval steps (plain JAX, compiled once per shape) and validation over a split."""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from unet_jax import presets
from unet_jax.data.pipeline import padded_batches
from unet_jax.inference import metrics
from unet_jax.inference.compiled import inference_jit
from unet_jax.models import outputs
from unet_jax.train import faults, losses
from unet_jax.train.config import TrainConfig
from unet_jax.train.setup import global_batch, to_host


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
        return m(x), nnx.state(m, nnx.Not(nnx.Param))  # statistics, an imported net's dropout key

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
        logits = outputs.last_head(out).astype(jnp.float32)
        target = losses.head_target(labels, logits)
        cm = metrics.confusion_matrix(outputs.classes(logits), target, n_classes,
                                      cfg.ignore_index)
        return loss, cm

    return train_step, eval_step


def make_steps(cfg: TrainConfig):
    """(train_step, eval_step), jit-compiled; model and optimizer are donated."""
    train_step, eval_step = step_functions(cfg)
    return (nnx.jit(train_step, donate_argnames=("model", "optimizer"), graph=False),
            inference_jit(eval_step))


def validate(model, eval_step, dataset, cfg: TrainConfig, sharding) -> dict:
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
