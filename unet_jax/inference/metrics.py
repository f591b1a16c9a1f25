"""Segmentation metrics from a confusion matrix accumulated on device. Under `jax.jit` with
the batch sharded over a mesh the matrix is a global sum, so the metrics are global."""

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax.data.imageio import IGNORE_INDEX


def confusion_matrix(pred: jax.Array, labels: jax.Array, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """(num_classes, num_classes) int32 counts, rows = true class, columns = predicted.

    A one-hot contraction over pixels rather than `bincount`: it partitions over a sharded
    batch (a global all-reduce) and is exact below 2**24 pixels per cell and batch.
    """
    valid = (labels != ignore_index) & (labels < num_classes)
    true = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes) * valid[..., None]
    predicted = jax.nn.one_hot(pred, num_classes)
    counts = jnp.einsum("...c,...d->cd", true, predicted, precision=jax.lax.Precision.HIGHEST)
    return jnp.round(counts).astype(jnp.int32)


def iou_of_present(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU, NaN for a class absent from both labels and predictions."""
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    union = cm.sum(1) + cm.sum(0) - tp
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def miou_present(confusion: np.ndarray) -> float:
    """mIoU as training reports it (`miou` in metrics.jsonl): the mean IoU over the classes
    present in the labels or predictions (0 when none is). `unet-jax evaluate` also reports
    bubbliiiing's `miou_all_classes`, where an absent class counts 0."""
    iou = iou_of_present(confusion)
    return float(np.nanmean(iou)) if not np.isnan(iou).all() else 0.0


def summarize(confusion: np.ndarray) -> dict:
    """Pixel accuracy, per-class IoU and Dice, and their means over classes present in the
    labels or predictions (`miou_present`)."""
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    true, pred = cm.sum(1), cm.sum(0)
    present = true + pred - tp > 0
    iou = iou_of_present(cm)
    dice = np.where(present, 2 * tp / np.maximum(true + pred, 1), np.nan)
    return {"pixel_acc": float(tp.sum() / max(cm.sum(), 1)),
            "miou": miou_present(cm),
            "mdice": float(np.nanmean(dice)) if present.any() else 0.0,
            "iou": [None if np.isnan(v) else float(v) for v in iou],
            "dice": [None if np.isnan(v) else float(v) for v in dice]}
