"""Training output: a progress bar, metrics as JSONL and TensorBoard events (tensorboardX,
no TensorFlow), and at the end PNGs of the curves and of input / truth / prediction."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from unet_jax import atomic, presets
from unet_jax.data import layouts
from unet_jax.data.imageio import IGNORE_INDEX
from unet_jax.inference import palette
from unet_jax.inference.compiled import inference_jit
from unet_jax.models import outputs
from unet_jax.train import losses


@inference_jit
def _last_head(model, images):
    return outputs.last_head(model(images))


def read_metrics(workdir: Path) -> list[dict]:
    """The epoch records of `workdir/metrics.jsonl` (a line torn by a kill is dropped)."""
    path = Path(workdir) / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class Logger:
    """Writes under `workdir`: metrics.jsonl, tb/ (events), curves.png, predictions.png.
    Only one process of a multi-host run writes (`enabled`)."""

    def __init__(self, workdir: Path, *, enabled: bool = True):
        self.workdir, self.enabled = workdir, enabled
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(str(workdir / "tb"))

    def progress(self, steps, epoch: int, show: bool):
        return tqdm(steps, desc=f"epoch {epoch + 1}", disable=not (show and self.enabled),
                    leave=False, dynamic_ncols=True)

    def scalars(self, step: int, values: dict) -> None:
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def epoch(self, summary: dict) -> None:
        if not self.enabled:
            return
        # rewritten whole and replaced atomically: a rerun after a kill re-validates an epoch
        # it had logged but not checkpointed, and its record replaces the earlier one
        kept = [r for r in read_metrics(self.workdir) if r["epoch"] < summary["epoch"]]
        path = self.workdir / "metrics.jsonl"
        atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in [*kept, summary]))
        self.scalars(summary["step"], {f"val/{k}": v for k, v in summary.items()
                                       if isinstance(v, float)})
        print(f"epoch {summary['epoch']:>3}  train loss {summary['train_loss']:.4f}  "
              f"val loss {summary['val_loss']:.4f}  pixel acc {summary['pixel_acc']:.3f}  "
              f"mIoU(present) {summary['miou']:.3f}  mDice {summary['mdice']:.3f}", flush=True)

    def close(self) -> None:
        if self.writer:
            self.writer.close()

    def pictures(self, model, dataset, cfg, count: int = 4) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [json.loads(line) for line in (self.workdir / "metrics.jsonl").read_text().splitlines()]
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
        epochs = [r["epoch"] for r in rows]
        a.plot(epochs, [r["train_loss"] for r in rows], label="train")
        a.plot(epochs, [r["val_loss"] for r in rows], label="val")
        a.set(xlabel="epoch", ylabel="loss", title="loss")
        a.legend()
        b.plot(epochs, [r["miou"] for r in rows], color="C2")
        b.set(xlabel="epoch", ylabel="mIoU", title="validation mIoU", ylim=(0, 1))
        fig.tight_layout()
        fig.savefig(self.workdir / "curves.png", dpi=110)
        plt.close(fig)

        model.eval()
        samples = [dataset[i] for i in range(min(count, len(dataset)))]
        images = np.stack([s[0] for s in samples])
        x = presets.get(cfg.preprocess or "unit").normalize(jnp.asarray(images))
        logits = _last_head(model, x)
        pred = np.asarray(outputs.classes(logits))
        truth = np.asarray(losses.center_crop_mask(np.stack([s[1] for s in samples]), *pred.shape[1:]))
        if images.ndim == 5:  # volumes: the middle slice of the first axis, the first channel
            middle = images.shape[1] // 2
            images, truth, pred = images[:, middle, ..., :1], truth[:, middle], pred[:, middle]
        names = palette.class_names(max(cfg.num_classes, 2), layout=layout_of(cfg.data))
        fig = predictions_figure(images, truth, pred, names, cfg.ignore_index)
        fig.savefig(self.workdir / "predictions.png", dpi=90)
        plt.close(fig)
        model.train()


def layout_of(data: str) -> str | None:
    """The dataset layout name of a training `data` spec (None: synthetic, tfds)."""
    kind = data.partition(":")[0]
    if kind in layouts.READERS:
        return kind
    return layouts.from_spec(data).name if kind == "folder" else None


def predictions_figure(images, truth, pred, names: list[str], ignore_index: int = IGNORE_INDEX):
    """A matplotlib figure: per sample the input, ground truth and prediction in the class
    palette (`unet_jax.palette`), the prediction's pixel accuracy, a legend of the classes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cmap, vmin, vmax = palette.colormap(len(names))
    truth = np.where(truth == ignore_index, IGNORE_INDEX, truth)
    fig, axes = plt.subplots(len(images), 3, figsize=(7.5, 0.8 + 2.3 * len(images)),
                             squeeze=False, layout="constrained")
    for row, image, t, p in zip(axes, images, truth, pred):
        row[0].imshow(image[..., :3] if image.shape[-1] >= 3 else image[..., 0], cmap="gray")
        row[1].imshow(t, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        row[2].imshow(p, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        valid = t != IGNORE_INDEX
        accuracy = (p == t)[valid].mean() if valid.any() else float("nan")
        for ax, title in zip(row, ("input", "ground truth",
                                   f"prediction ({100 * accuracy:.1f}% of pixels right)")):
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    present = np.union1d(np.unique(truth), np.unique(pred))
    entries = palette.legend_entries(names, present, ignore=bool((truth == IGNORE_INDEX).any()))
    fig.legend(handles=palette.legend_handles(entries), loc="outside lower center", fontsize=8,
               ncols=min(len(entries), 4), frameon=False)
    return fig
