"""Segmentation losses on channels-last logits (B, *spatial, C) and integer masks
(B, *spatial), images or volumes; pixels equal to `ignore_index` (255, as in the seeds'
`CrossEntropyLoss(ignore_index=255)`) count nowhere. All reductions are in float32 whatever
the compute dtype."""

import jax
import jax.numpy as jnp
import optax

from unet_jax.data.imageio import IGNORE_INDEX
from unet_jax.models import outputs


def center_crop_mask(mask: jax.Array, *size: int) -> jax.Array:
    """The centre of `mask` at the logits' spatial size: semseg_unet's valid convs and
    labml_unet on sizes not divisible by 16 predict the centre of the input only."""
    starts = [(n - m) // 2 for n, m in zip(mask.shape[1:], size, strict=True)]
    return mask[(slice(None), *(slice(a, a + m) for a, m in zip(starts, size)))]


def head_target(mask: jax.Array, logits: jax.Array) -> jax.Array:
    """The mask for one output: itself at its size; for a deep-supervision head coarser by
    a whole factor on every axis (>= 2 on one at least), the mask downsampled as nnU-Net does it
    (`interpolate(..., mode="nearest-exact")`: source voxel floor((i + 0.5) * factor));
    otherwise its centre (`center_crop_mask`)."""
    size, full = logits.shape[1:-1], mask.shape[1:]
    if size == full:
        return mask
    if all(n % m == 0 for n, m in zip(full, size, strict=True)) and any(
            n // m >= 2 for n, m in zip(full, size)):
        for axis, (n, m) in enumerate(zip(full, size)):
            index = (jnp.arange(m) * (n // m) + (n // m) // 2)
            mask = jnp.take(mask, index, axis=axis + 1)
        return mask
    return center_crop_mask(mask, *size)


def _valid(labels: jax.Array, ignore_index: int) -> tuple[jax.Array, jax.Array]:
    valid = labels != ignore_index
    return valid, jnp.where(valid, labels, 0).astype(jnp.int32)


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """torch `CrossEntropyLoss(ignore_index=...)`: the mean over non-ignored pixels."""
    valid, safe = _valid(labels, ignore_index)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    return jnp.sum(losses * valid) / jnp.maximum(valid.sum(), 1)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """torch `BCEWithLogitsLoss` for single-channel logits (B,H,W,1) and 0/1 masks."""
    valid, safe = _valid(labels, ignore_index)
    losses = optax.sigmoid_binary_cross_entropy(logits[..., 0].astype(jnp.float32),
                                                safe.astype(jnp.float32))
    return jnp.sum(losses * valid) / jnp.maximum(valid.sum(), 1)


def _probs_and_onehot(logits, labels, ignore_index):
    valid, safe = _valid(labels, ignore_index)
    probs = outputs.probabilities(logits)
    onehot = jax.nn.one_hot(safe, probs.shape[-1])
    return probs * valid[..., None], onehot * valid[..., None]


def dice(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX, eps: float = 1.0
         ) -> jax.Array:
    """Soft Dice loss, 1 - mean over classes of 2|P.Y| / (|P| + |Y|) on the whole batch."""
    probs, onehot = _probs_and_onehot(logits, labels, ignore_index)
    axes = tuple(range(probs.ndim - 1))
    inter = jnp.sum(probs * onehot, axis=axes)
    total = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
    return 1.0 - jnp.mean((2 * inter + eps) / (total + eps))


def focal(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX, gamma: float = 2.0
          ) -> jax.Array:
    """Focal loss (Lin et al.): cross-entropy weighted by (1 - p_true)^gamma."""
    probs, onehot = _probs_and_onehot(logits, labels, ignore_index)
    valid, _ = _valid(labels, ignore_index)
    p_true = jnp.sum(probs * onehot, axis=-1)
    losses = -((1 - p_true) ** gamma) * jnp.log(jnp.clip(p_true, 1e-7, 1.0))
    return jnp.sum(losses * valid) / jnp.maximum(valid.sum(), 1)


def nnunet_dc_ce(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX,
                 batch_dice: bool = False) -> jax.Array:
    """nnU-Net's `DC_and_CE_loss` (nnunetv2 2.8.1, weights 1 and 1): cross-entropy over the
    labelled voxels (0 where none is) minus `MemoryEfficientSoftDiceLoss`'s soft Dice of
    the softmax, foreground classes only, smooth 1e-5, per sample and class (summed over the
    batch with `batch_dice`), averaged. Negative at a good fit, as nnU-Net's."""
    valid, safe = _valid(labels, ignore_index)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # float64 stays
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    ce = jnp.where(valid.any(), jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1), 0.0)
    mask = valid[..., None].astype(logits.dtype)
    probs = jax.nn.softmax(logits, -1)[..., 1:]
    onehot = jax.nn.one_hot(safe, logits.shape[-1])[..., 1:]
    axes = tuple(range(1, logits.ndim - 1))
    intersect = jnp.sum(probs * onehot * mask, axes)
    predicted, truth = jnp.sum(probs * mask, axes), jnp.sum(onehot * mask, axes)
    if batch_dice:
        intersect, predicted, truth = intersect.sum(0), predicted.sum(0), truth.sum(0)
    smooth = 1e-5
    dice_ = (2 * intersect + smooth) / jnp.maximum(truth + predicted + smooth, 1e-8)
    return ce - jnp.mean(dice_)


def nnunet_dc_ce_batch(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX
                       ) -> jax.Array:
    """`nnunet_dc_ce` with nnU-Net's batch Dice (the plans' `batch_dice` true)."""
    return nnunet_dc_ce(logits, labels, ignore_index, batch_dice=True)


def nnunet_head_weights(heads: int) -> tuple[float, ...]:
    """nnU-Net's deep-supervision weights for `heads` outputs ordered coarsest first (as the
    training network returns them): 1/2^k for the k-th finest, the coarsest 0, summing to 1."""
    weights = [1 / 2 ** k for k in range(heads)]
    weights[-1] = 0.0
    return tuple(w / sum(weights) for w in reversed(weights))


LOSSES = {"ce": cross_entropy, "bce": binary_cross_entropy, "dice": dice, "focal": focal,
          "dc_ce": nnunet_dc_ce, "dc_ce_batch": nnunet_dc_ce_batch}


def parse_loss(spec: str) -> dict[str, float]:
    """"ce" or "ce+0.5*dice" -> {"ce": 1.0, "dice": 0.5}, with a clear error for unknowns."""
    terms = {}
    for term in spec.replace(" ", "").split("+"):
        weight, _, name = term.rpartition("*")
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r} in {spec!r}; known: {', '.join(LOSSES)}")
        terms[name] = float(weight) if weight else 1.0
    return terms


def segmentation_loss(outs: jax.Array | list[jax.Array], labels: jax.Array,
                      terms: dict[str, float], ignore_index: int = IGNORE_INDEX,
                      head_weights: tuple[float, ...] | None = None) -> jax.Array:
    """The weighted sum of `terms` on one output, or the (weighted) mean over the heads of
    deep supervision; each head's mask is `head_target`'s."""
    heads = outputs.heads(outs)
    weights = head_weights or (1.0,) * len(heads)
    if len(weights) != len(heads):
        raise ValueError(f"{len(heads)} outputs but {len(weights)} head weights")
    total = 0.0
    for w, logits in zip(weights, heads):
        target = head_target(labels, logits)
        total += w * sum(c * LOSSES[name](logits, target, ignore_index) for name, c in terms.items())
    return total / sum(weights)
