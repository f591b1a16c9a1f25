"""The optax optimizer of a `TrainConfig`: schedule, clipping, weight decay, backbone freezing."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from unet_jax import registry
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
            takes = [a.name for a in registry.all_archs() if a.backbone is not None]
            raise ValueError(f"freeze_backbone_epochs needs a pretrained backbone; {cfg.arch} has "
                             f"none ({', '.join(takes)} do)")
        tx = freeze_for(tx, names, cfg.freeze_backbone_epochs * steps_per_epoch)
    return tx
