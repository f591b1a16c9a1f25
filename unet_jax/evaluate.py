"""Evaluation of a model on a split of files: predictions at each image's own size (the
prediction pipeline), a confusion matrix, and bubbliiiing `utils_metrics.compute_mIoU`'s
numbers: per-class IoU, recall (its "PA") and precision, their means over all classes
(a class absent from both labels and predictions counts 0, as there), pixel accuracy."""

import json
from pathlib import Path

import numpy as np

from unet_jax import prediction as predict_lib


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = label, columns = prediction; labels
    outside 0..num_classes-1 (the ignore index) are skipped (bubbliiiing `fast_hist`)."""
    keep = labels < num_classes
    index = num_classes * labels[keep].astype(np.int64) + predictions[keep]
    return np.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(cm: np.ndarray) -> dict:
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    iou = tp / np.maximum(cm.sum(1) + cm.sum(0) - tp, 1)
    recall = tp / np.maximum(cm.sum(1), 1)
    precision = tp / np.maximum(cm.sum(0), 1)
    return {"miou": float(np.mean(iou)), "mrecall": float(np.mean(recall)),
            "mprecision": float(np.mean(precision)),
            "pixel_acc": float(tp.sum() / max(cm.sum(), 1)),
            "iou": iou.tolist(), "recall": recall.tolist(), "precision": precision.tolist(),
            "pixels": int(cm.sum())}


def evaluate(model, dataset, options: predict_lib.Options | None = None,
             chunk: int = 8, progress: bool = False) -> dict:
    """Scores of `model` on a `data.FileDataset`'s samples at their own sizes."""
    from tqdm import tqdm
    predictor = predict_lib.Predictor(model, options or predict_lib.Options())
    n = predictor.classes
    cm = np.zeros((n, n), np.int64)
    bar = tqdm(total=len(dataset), unit="img", disable=not progress)
    for first in range(0, len(dataset), chunk):
        samples = [dataset.read(i) for i in range(first, min(first + chunk, len(dataset)))]
        probabilities = predictor.probabilities([image for image, _ in samples])
        for (_, mask), p in zip(samples, probabilities):
            cm += confusion(mask, predict_lib.masks(p), n)
        bar.update(len(samples))
    bar.close()
    return {**scores(cm), "confusion": cm.tolist(), "images": len(dataset),
            "preprocess": predictor.preset.name, "fit": predictor.fit}


def write_report(result: dict, out: Path, names: list[str] | None = None) -> list[Path]:
    """metrics.json, confusion.png (row-normalised) and iou.png under `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    cm = np.asarray(result["confusion"], np.float64)
    names = names or [str(k) for k in range(len(cm))]
    paths = [out / "metrics.json", out / "confusion.png", out / "iou.png"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    size = 2 + 0.35 * len(cm)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax.set(xlabel="predicted", ylabel="label", xticks=range(len(cm)), yticks=range(len(cm)),
           xticklabels=names, yticklabels=names, title="confusion (rows sum to 1)")
    fig.colorbar(shown)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(cm) + 2), 3))
    ax.bar(range(len(cm)), result["iou"])
    ax.set(xticks=range(len(cm)), xticklabels=names, ylim=(0, 1), ylabel="IoU",
           title=f"mIoU = {100 * result['miou']:.2f}%")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths
