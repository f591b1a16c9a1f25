"""Evaluation of a model on a split of files: predictions at each image's own size (the
prediction pipeline), a confusion matrix, and bubbliiiing `utils_metrics.compute_mIoU`'s
numbers: per-class IoU, recall (its "PA") and precision, their means over all classes
(`miou_all_classes`: a class absent from both labels and predictions counts 0, as there),
pixel accuracy; and training's mIoU over the classes present (`miou_present`)."""

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from unet_jax.inference import metrics, palette
from unet_jax.inference import prediction as predict_lib


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
    return {"miou_all_classes": float(np.mean(iou)), "miou_present": metrics.miou_present(cm),
            "mrecall": float(np.mean(recall)),
            "mprecision": float(np.mean(precision)),
            "pixel_acc": float(tp.sum() / max(cm.sum(), 1)),
            "iou": iou.tolist(), "recall": recall.tolist(), "precision": precision.tolist(),
            "pixels": int(cm.sum())}


def evaluate(model, dataset, options: predict_lib.Options | None = None,
             chunk: int = 8, progress: bool = False) -> dict:
    """Scores of `model` on a `data.FileDataset`'s samples at their own sizes."""
    predictor = predict_lib.Predictor(model, options or predict_lib.Options())
    n = predictor.classes
    cm = np.zeros((n, n), np.int64)
    with tqdm(total=len(dataset), unit="img", disable=not progress) as bar:  # closed on errors too
        for first in range(0, len(dataset), chunk):
            samples = [dataset.read(i) for i in range(first, min(first + chunk, len(dataset)))]
            probabilities = predictor.probabilities([image for image, _ in samples])
            for (_, mask), p in zip(samples, probabilities):
                cm += confusion(mask, predict_lib.masks(p), n)
            bar.update(len(samples))
    return {**scores(cm), "confusion": cm.tolist(), "images": len(dataset),
            "preprocess": predictor.preset.name, "fit": predictor.fit}


ANNOTATED = 30  # confusion cells carry their numbers up to this many classes


def pixel_count(count: float) -> str:
    """A pixel count in at most 4 digits: 1234, 12.3k, 4.56M."""
    if count < 10_000:
        return f"{int(count)}"
    for scale, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        text = f"{count / scale:.3g}"
        if "e" not in text and float(text) < 1000:
            return text + unit
    return f"{count:.3g}"


def confusion_figure(cm: np.ndarray, names: list[str]):
    """A matplotlib figure of the confusion matrix, coloured by share of the row; up to
    `ANNOTATED` classes each non-empty cell shows its pixel count and row percentage."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm, np.float64)
    n = len(cm)
    percent = 100 * cm / np.maximum(cm.sum(1, keepdims=True), 1)
    annotate = n <= ANNOTATED
    side = max(3.5, (0.75 if annotate else 0.25) * n)
    labels = 0.075 * max(len(name) for name in names) + 0.6
    fig, ax = plt.subplots(figsize=(side + labels + 1.8, side + labels + 1.1), layout="constrained")
    shown = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    rows = ([f"{name}\n{pixel_count(total)} px" for name, total in zip(names, cm.sum(1))]
            if annotate else names)
    ax.set(xticks=range(n), yticks=range(n), xticklabels=names, yticklabels=rows,
           xlabel="predicted class", ylabel="true class (label)")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_title("confusion matrix: rows = true class, columns = predicted class\n"
                 + ("cell: pixels and % of the row (the diagonal: recall)" if annotate
                    else "colour: % of the row (the diagonal: recall)"), fontsize=11)
    if annotate:
        size = 9 if n <= 8 else 8 if n <= 24 else 7
        for (i, j), count in np.ndenumerate(cm):
            if count:
                r, g, b, _ = shown.cmap(shown.norm(percent[i, j]))
                share = f"{percent[i, j]:.1f}%" if percent[i, j] >= 0.05 else "<0.1%"
                ax.text(j, i, f"{pixel_count(count)}\n{share}", ha="center", va="center",
                        fontsize=size, color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                        else "black")
    fig.colorbar(shown, ax=ax, label="% of the row (true class)", shrink=min(1.0, 4 / side + 0.3))
    return fig


def iou_figure(result: dict, names: list[str]):
    """A matplotlib bar chart of the per-class IoU (%) in the class palette, values on the
    bars, the mIoU dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, iou, miou = len(names), 100 * np.asarray(result["iou"]), 100 * result["miou_all_classes"]
    labels = 0.06 * max(len(name) for name in names)
    fig, ax = plt.subplots(figsize=(max(4.5, (0.5 if n <= 40 else 0.18) * n + 1.5), 3.6 + labels),
                           layout="constrained")
    bars = ax.bar(range(n), iou, color=palette.palette(n) / 255, edgecolor="0.3", linewidth=0.6)
    if n <= 40:
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in iou], fontsize=8, padding=2)
    ax.axhline(miou, color="0.3", linestyle="--", linewidth=1)
    ax.set(xticks=range(n), xticklabels=names, xlim=(-0.6, n - 0.4), ylim=(0, 108),
           ylabel="IoU (%)", title=f"IoU per class; mIoU {miou:.2f}% (dashed)")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    return fig


def write_report(result: dict, out: Path, names: list[str] | None = None) -> list[Path]:
    """metrics.json, confusion.png (row-normalised) and iou.png under `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    cm = np.asarray(result["confusion"], np.float64)
    names = palette.class_names(len(cm), names or "")
    paths = [out / "metrics.json", out / "confusion.png", out / "iou.png"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    for path, fig in ((paths[1], confusion_figure(cm, names)), (paths[2], iou_figure(result, names))):
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return paths
