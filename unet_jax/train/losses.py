"""Segmentation losses on NHWC logits and HxW integer masks; pixels equal to
`ignore_index` (255, as in the seeds' `CrossEntropyLoss(ignore_index=255)`) count nowhere.
All reductions are in float32 whatever the compute dtype."""

import jax
import jax.numpy as jnp
import optax

from unet_jax.data.imageio import IGNORE_INDEX
from unet_jax.models import outputs


def center_crop_mask(mask: jax.Array, height: int, width: int) -> jax.Array:
    """The centre of `mask` at the logits' size: semseg_unet's valid convs and labml_unet on
    sizes not divisible by 16 predict the centre of the input only."""
    top, left = (mask.shape[1] - height) // 2, (mask.shape[2] - width) // 2
    return mask[:, top:top + height, left:left + width]


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
    inter = jnp.sum(probs * onehot, axis=(0, 1, 2))
    total = jnp.sum(probs, axis=(0, 1, 2)) + jnp.sum(onehot, axis=(0, 1, 2))
    return 1.0 - jnp.mean((2 * inter + eps) / (total + eps))


def focal(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX, gamma: float = 2.0
          ) -> jax.Array:
    """Focal loss (Lin et al.): cross-entropy weighted by (1 - p_true)^gamma."""
    probs, onehot = _probs_and_onehot(logits, labels, ignore_index)
    valid, _ = _valid(labels, ignore_index)
    p_true = jnp.sum(probs * onehot, axis=-1)
    losses = -((1 - p_true) ** gamma) * jnp.log(jnp.clip(p_true, 1e-7, 1.0))
    return jnp.sum(losses * valid) / jnp.maximum(valid.sum(), 1)


LOSSES = {"ce": cross_entropy, "bce": binary_cross_entropy, "dice": dice, "focal": focal}


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
    deep supervision. Masks are centre-cropped to each output's size."""
    heads = outputs.heads(outs)
    weights = head_weights or (1.0,) * len(heads)
    if len(weights) != len(heads):
        raise ValueError(f"{len(heads)} outputs but {len(weights)} head weights")
    total = 0.0
    for w, logits in zip(weights, heads):
        target = center_crop_mask(labels, logits.shape[1], logits.shape[2])
        total += w * sum(c * LOSSES[name](logits, target, ignore_index) for name, c in terms.items())
    return total / sum(weights)
