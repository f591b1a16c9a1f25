"""Segmentation metrics from a confusion matrix accumulated on device. Under `jax.jit` with
the batch sharded over a mesh the matrix is a global sum, so the metrics are global."""

import jax
import jax.numpy as jnp
import numpy as np


def predictions(logits: jax.Array) -> jax.Array:
    """Class ids: argmax over channels, or sigmoid > 0.5 for a single channel."""
    return (logits[..., 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else logits.argmax(-1)


def confusion_matrix(pred: jax.Array, labels: jax.Array, num_classes: int,
                     ignore_index: int = 255) -> jax.Array:
    """(num_classes, num_classes) int32 counts, rows = true class, columns = predicted.

    A one-hot contraction over pixels rather than `bincount`: it partitions over a sharded
    batch (a global all-reduce) and is exact below 2**24 pixels per cell and batch.
    """
    valid = (labels != ignore_index) & (labels < num_classes)
    true = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes) * valid[..., None]
    predicted = jax.nn.one_hot(pred, num_classes)
    counts = jnp.einsum("bhwc,bhwd->cd", true, predicted, precision=jax.lax.Precision.HIGHEST)
    return jnp.round(counts).astype(jnp.int32)


def summarize(confusion: np.ndarray) -> dict:
    """Pixel accuracy, per-class IoU and Dice, and their means over classes present in the
    labels or predictions."""
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    true, pred = cm.sum(1), cm.sum(0)
    union = true + pred - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    dice = np.where(present, 2 * tp / np.maximum(true + pred, 1), np.nan)
    return {"pixel_acc": float(tp.sum() / max(cm.sum(), 1)),
            "miou": float(np.nanmean(iou)) if present.any() else 0.0,
            "mdice": float(np.nanmean(dice)) if present.any() else 0.0,
            "iou": [None if np.isnan(v) else float(v) for v in iou],
            "dice": [None if np.isnan(v) else float(v) for v in dice]}
