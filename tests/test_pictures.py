"""The pictures users read: one class palette and legend on every mask picture, and the
numbers and names in the evaluation plots."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from PIL import Image

from unet_jax.cli import predict as commands
from unet_jax.inference import evaluation as evaluate
from unet_jax.inference import palette
from unet_jax.train import reporting

matplotlib.use("Agg")


def rgb_of(cmap, vmin, vmax, ids) -> np.ndarray:
    return ScalarMappable(Normalize(vmin, vmax), cmap).to_rgba(np.asarray(ids), bytes=True)[..., :3]


@pytest.mark.parametrize("n", [2, 4, 21, 30])
def test_colormap_is_the_palette(n):
    """Class k in palette colour k whatever the classes present; the ignore index in VOC's
    border colour."""
    cmap, vmin, vmax = palette.colormap(n)
    np.testing.assert_array_equal(rgb_of(cmap, vmin, vmax, np.arange(n)), palette.palette(n))
    assert tuple(rgb_of(cmap, vmin, vmax, [palette.IGNORE_INDEX])[0]) == palette.IGNORE_COLOUR
    assert tuple(palette.voc_palette(256)[255]) == palette.IGNORE_COLOUR


def test_every_writer_uses_one_palette():
    """Masks, overlays, predictions.png and iou.png take their colours from `palette`."""
    assert reporting.palette is palette and evaluate.palette is palette and commands.palette is palette
    n, mask = 5, np.arange(5, dtype=np.uint8).reshape(1, 5)
    image = np.zeros((1, 5, 3), np.uint8)
    np.testing.assert_array_equal(np.asarray(palette.overlay(image, mask, n, 1))[0], palette.palette(n))
    png = palette.mask_image(mask, n)
    np.testing.assert_array_equal(np.asarray(png), mask)  # the pixel values stay the class ids
    colours = np.array(png.getpalette()).reshape(-1, 3)
    np.testing.assert_array_equal(colours[:n], palette.palette(n))
    assert tuple(colours[255]) == palette.IGNORE_COLOUR


def test_class_names():
    assert palette.class_names(3) == ["class 0", "class 1", "class 2"]
    assert palette.class_names(21, layout="voc")[15] == "person"
    assert palette.class_names(4, layout="voc") == [f"class {k}" for k in range(4)]  # not VOC's 21
    assert palette.class_names(2, layout="isic") == ["background", "lesion"]
    assert palette.class_names(3, "sky, road,car") == ["sky", "road", "car"]
    assert palette.class_names(12, "camvid", layout="voc")[3] == "road"
    assert palette.class_names(2, ["a", "b"], layout="carvana") == ["a", "b"]
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        palette.class_names(3, "a,b")


def test_legend_entries():
    names = palette.class_names(21, layout="voc")
    entries = palette.legend_entries(names)
    assert [label for label, _ in entries][:2] == ["0: background", "1: aeroplane"]
    np.testing.assert_allclose([rgb for _, rgb in entries], palette.palette(21) / 255)
    assert [label for label, _ in palette.legend_entries(["class 0", "class 1"])] == ["class 0", "class 1"]
    last = palette.legend_entries(names, ignore=True)[-1]
    assert "255" in last[0] and "ignored" in last[0]
    assert np.allclose(last[1], np.array(palette.IGNORE_COLOUR) / 255)
    many = palette.class_names(palette.LEGEND_ALL + 8)
    assert len(palette.legend_entries(many)) == len(many)
    shown = palette.legend_entries(many, present=[0, 33, 255])
    assert [label for label, _ in shown] == ["class 0", "class 33"]


def test_legend_image(tmp_path):
    names = palette.class_names(21, layout="voc")
    palette.legend_image(palette.legend_entries(names), tmp_path / "legend.png")
    pixels = np.asarray(Image.open(tmp_path / "legend.png").convert("RGB")).reshape(-1, 3)
    found = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert {tuple(c) for c in palette.palette(21)} <= found


def pixel_at(fig, ax, png: np.ndarray, row: float, col: float) -> np.ndarray:
    """The RGB of the saved figure `png` where `ax` shows image pixel (row, col)."""
    x, y = ax.transData.transform((col, row))
    return png[int(round(png.shape[0] - y)), int(round(x)), :3]


def test_predictions_png_panels_use_the_palette(tmp_path):
    """In the saved predictions.png a class-k pixel of the truth and prediction panels has
    palette colour k, an ignored one the ignore colour; the legend names the classes."""
    names = palette.class_names(21, layout="voc")
    truth = np.zeros((2, 32, 32), np.uint8)
    truth[0, :16, :16], truth[0, :16, 16:], truth[0, 16:, :16], truth[0, 16:, 16:] = 15, 7, 255, 20
    truth[1] = 12
    pred = truth.copy()
    pred[0, 16:, :16] = 3
    pred[1, :, 16:] = 1
    images = np.full((2, 32, 32, 3), 128, np.uint8)
    fig = reporting.predictions_figure(images, truth, pred, names, ignore_index=255)
    fig.savefig(tmp_path / "predictions.png", dpi=fig.dpi)
    png = np.asarray(Image.open(tmp_path / "predictions.png").convert("RGB"))
    colours = palette.palette(21)
    axes = np.array(fig.axes).reshape(2, 3)
    for sample in range(2):
        for panel, mask in ((1, truth[sample]), (2, pred[sample])):
            for row, col in ((8, 8), (8, 24), (24, 8), (24, 24)):
                want = palette.IGNORE_COLOUR if mask[row, col] == 255 else colours[mask[row, col]]
                got = pixel_at(fig, axes[sample, panel], png, row, col)
                assert tuple(got) == tuple(want), (sample, panel, row, col, mask[row, col])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "15: person" in labels and "7: car" in labels and labels[-1] == "255: ignored"
    # ignored pixels do not count: sample 0 is right where labelled, sample 1 on half
    assert [axes[k, 2].get_title() for k in range(2)] == [
        "prediction (100.0% of pixels right)", "prediction (50.0% of pixels right)"]
    plt.close(fig)


def test_confusion_cells_carry_counts_and_row_percentages():
    cm = np.array([[50, 0, 2], [3, 7, 0], [0, 0, 0]])
    names = ["road", "car", "tree"]
    fig = evaluate.confusion_figure(cm, names)
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert set(cells) == {(i, j) for i, j in zip(*np.nonzero(cm))}  # empty cells stay blank
    for (i, j), text in cells.items():
        count, share = text.get_text().split("\n")
        assert int(count) == cm[i, j]
        assert float(share.rstrip("%")) == pytest.approx(100 * cm[i, j] / cm[i].sum(), abs=0.05)
    dark, light = cells[(0, 0)].get_color(), cells[(0, 2)].get_color()
    assert dark == "white" and light == "black"
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text().split("\n")[0] for t in ax.get_yticklabels()] == names
    assert "rows = true class" in ax.get_title() and "columns = predicted class" in ax.get_title()
    width, height = fig.get_size_inches()
    big = evaluate.confusion_figure(np.eye(21, dtype=int), palette.class_names(21, layout="voc"))
    assert big.get_size_inches()[0] > 2 * width  # scales with the class count
    plt.close(fig)
    plt.close(big)


@pytest.mark.parametrize("count, text", [(0, "0"), (9999, "9999"), (12_345, "12.3k"),
                                         (999_960, "1M"), (4_560_000, "4.56M"), (7e9, "7G")])
def test_pixel_count(count, text):
    assert evaluate.pixel_count(count) == text


def test_iou_figure():
    result = {"iou": [0.9, 0.25, 0.0], "miou_all_classes": 0.3833}
    names = ["background", "car", "tree"]
    fig = evaluate.iou_figure(result, names)
    ax = fig.axes[0]
    bars = ax.patches
    np.testing.assert_allclose([b.get_height() for b in bars], [90, 25, 0])
    np.testing.assert_allclose([b.get_facecolor()[:3] for b in bars], palette.palette(3) / 255)
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.texts] == ["90.0", "25.0", "0.0"]
    assert "38.33%" in ax.get_title()
    plt.close(fig)


def test_write_report_plots(tmp_path):
    cm = np.array([[5, 1], [0, 4]])
    evaluate.write_report({**evaluate.scores(cm), "confusion": cm.tolist()}, tmp_path)
    for name in ("confusion.png", "iou.png"):
        assert min(Image.open(tmp_path / name).size) >= 350
