"""The optax optimizer of a `TrainConfig`: schedule, clipping, weight decay, backbone freezing."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from unet_jax import registry
from unet_jax.models.imported import graph
from unet_jax.models.imported.net import ImportedConfig, flax_path
from unet_jax.train.config import TrainConfig
from unet_jax.train.model import backbone_names


def learning_rate(cfg: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "constant":
        return optax.constant_schedule(cfg.lr)
    if cfg.schedule == "step":  # torch StepLR(step_size, gamma), stepped once per epoch
        return optax.exponential_decay(cfg.lr, cfg.step_epochs * steps_per_epoch, cfg.step_gamma,
                                       staircase=True)
    if cfg.schedule == "poly":
        return optax.polynomial_schedule(cfg.lr, 0.0, cfg.poly_power, total)
    if cfg.schedule == "poly_epoch":  # nnU-Net's PolyLRScheduler, stepped at each epoch's start
        def poly_epoch(step):
            epoch = jnp.asarray(step // steps_per_epoch, jnp.result_type(float))  # float64 under x64
            return cfg.lr * (1 - epoch / cfg.epochs) ** cfg.poly_power
        return poly_epoch
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


def unreached_parameters(model: nnx.Module, head_weights: tuple) -> set[str]:
    """The model paths of an imported network's parameters that only heads of weight 0 use
    (nnU-Net's coarsest deep-supervision output): the loss never reaches them."""
    if not head_weights or not isinstance(getattr(model, "config", None), ImportedConfig):
        return set()
    g = graph.parse(model.config.graph)
    used = g.state_reaching([i for i, w in enumerate(head_weights) if w])
    return {flax_path(e.name) for e in g.state if e.kind == "param" and e.name not in used}


def skipping(inner: optax.GradientTransformation, skipped: set[str]) -> optax.GradientTransformation:
    """`inner` leaving the parameters at the model paths `skipped` untouched, as torch's
    optimizers skip a parameter without a gradient (no weight decay, no momentum): `inner`
    sees zeros for their gradients and values, so its state for them stays zero."""
    if not skipped:
        return inner

    def mask(tree):
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.zeros_like(leaf) if _dotted(path) in skipped else leaf, tree)

    def update(updates, state, params=None):
        updates, state = inner.update(mask(updates), state, None if params is None else mask(params))
        return mask(updates), state

    return optax.GradientTransformation(inner.init, update)


def _dotted(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


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
    tx = skipping(tx, unreached_parameters(model, cfg.head_weights))
    if cfg.freeze_backbone_epochs:
        names = backbone_names(model)
        if not names:
            takes = [a.name for a in registry.all_archs() if a.backbone is not None]
            raise ValueError(f"freeze_backbone_epochs needs a pretrained backbone; {cfg.arch} has "
                             f"none ({', '.join(takes)} do)")
        tx = freeze_for(tx, names, cfg.freeze_backbone_epochs * steps_per_epoch)
    return tx
