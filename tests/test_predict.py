"""Prediction and evaluation: application-level parity with the upstreams' pipelines run in
torch, any image size with bounded compiled shapes, the CLI's outputs and errors, and
bubbliiiing's metrics."""

import json

import numpy as np
import pytest
from PIL import Image

import unet_jax
from unet_jax import registry
from unet_jax.cli import main
from unet_jax.data import datasets as data
from unet_jax.inference import evaluation as evaluate
from unet_jax.inference import metrics, palette, prediction
from unet_jax.models import recorded
from unet_jax.parity import harness, pipelines


def _photo(h, w, seed=0):
    """A non-square textured picture with shapes, as uint8 RGB."""
    return data.Shapes(1, height=h, width=w, num_classes=5, seed=seed)[0][0]


@pytest.mark.parametrize("arch", ["vgg16_unet", "resnet50_unet"])
def test_bubbliiiing_detect_image_parity(arch):
    """`predict` with the bubbliiiing preset gives bubbliiiing's detect_image mask (letterbox,
    /255, softmax, crop, bilinear back, argmax) on the same seeded weights, upstream widths,
    on a 500x375 or 375x500 picture (input_shape 256 here to keep CI fast; 512 in
    scripts/app_parity.py)."""
    config = registry.make_config(arch, num_classes=21)
    reference = harness.random_reference(config, seed=3).eval()
    model = unet_jax.load_torch({k: v.numpy() for k, v in reference.state_dict().items()})
    assert recorded.preset_of(model) == "bubbliiiing"
    h, w = (375, 500) if arch == "vgg16_unet" else (500, 375)
    photo = _photo(h, w)
    want = pipelines.bubbliiiing_detect(reference, Image.fromarray(photo), (256, 256))
    got = unet_jax.predict(model, photo, size=(256, 256))
    assert got.shape == (h, w) and (got == want).mean() >= 0.999, (got == want).mean()


def test_semseg_test_py_parity():
    """pytorch-semseg test.py (resize, BGR, minus mean, /255) gives its 68x68 output for a
    252x252 input; the same pixels of our canvas probabilities agree (their receptive field
    lies inside the canvas, so the reflected context does not reach them)."""
    config = registry.make_config("semseg_unet", feature_scale=4, n_classes=5)
    reference = harness.random_reference(config, seed=1).eval()
    model = unet_jax.load_torch({k: v.numpy() for k, v in reference.state_dict().items()})
    photo = _photo(300, 420)
    want = pipelines.semseg_test(reference, Image.fromarray(photo), (252, 252))
    predictor = prediction.Predictor(model, prediction.Options(size=(252, 252)))
    assert (predictor.preset.name, predictor.fit) == ("semseg", "resize")
    canvas, _ = predictor.canvas(photo)
    probs = predictor.canvas_probabilities([canvas])[0]
    got = prediction.masks(probs[92:160, 92:160])
    assert want.shape == (68, 68) and (got == want).mean() >= 0.999


def test_any_size_with_bounded_shapes():
    """Sizes the arch cannot take are padded and cropped back; sides beyond the tile are cut
    into blended windows; the windows of all these images have few distinct shapes."""
    model = unet_jax.create_model("imgseg_unet", base_width=4, output_ch=3)
    model.eval()
    predictor = prediction.Predictor(model, prediction.Options(tile=128, batch=3))
    shapes = set()
    run = predictor.canvas_probabilities

    def spy(canvases):
        for c in canvases:
            h, w = c.shape[:2]
            shapes.add((predictor._window(h), predictor._window(w)))
        return run(canvases)

    predictor.canvas_probabilities = spy
    images = [_photo(h, w, seed=h) for h, w in ((37, 53), (128, 300), (301, 77))]
    for image, probs in zip(images, predictor.probabilities(images)):
        assert probs.shape == (*image.shape[:2], 3)
        np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    assert shapes <= {(128, 128), (128, 112), (112, 128), (112, 112)}
    gray = unet_jax.create_model("imgseg_unet", base_width=4, output_ch=2, img_ch=1)
    gray.eval()
    photo = _photo(20, 30).astype(np.float32) / 255  # RGB floats, read as luminance
    assert unet_jax.predict(gray, photo, tta=True).shape == (20, 30)


def test_predict_and_evaluate_commands(tmp_path, capsys):
    """A converted torch checkpoint predicts folders and globs into palette PNGs (the ids),
    overlays and probabilities; an unreadable file is reported, the rest written, exit 2.
    `evaluate` reports bubbliiiing's compute_mIoU numbers for those predictions."""
    import torch
    config = registry.make_config("imgseg_unet", base_width=4, output_ch=3)
    checkpoint = tmp_path / "unet.pth"
    torch.save(harness.random_reference(config, seed=0).state_dict(), checkpoint)
    root = tmp_path / "ds"
    for split in ("train", "val"):
        for i in range(3):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            image, mask = data.Shapes(1, height=40 + 8 * i, width=56, num_classes=3, seed=i)[0]
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    (root / "val" / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "pred"
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "legend.png").write_bytes((root / "val" / "images" / "0.png").read_bytes())
    inputs = [str(root / "val" / "images"), str(root / "train" / "images" / "*.png"),
              str(tmp_path / "more")]
    code = main(["predict", str(checkpoint), *inputs, "-o", str(out), "--probabilities",
                 "--overlay", "2", "--no-progress", "--names", "ground,disc,box"])
    assert code == 2 and "broken.jpg: not a readable image" in capsys.readouterr().err
    written = sorted(p.name for p in out.glob("*.png"))
    assert len(written) == 15 and "0-2.png" in written  # same-named inputs kept apart
    assert "legend-2.png" in written and Image.open(out / "legend-2.png").mode == "P"
    legend = np.asarray(Image.open(out / "legend.png").convert("RGB")).reshape(-1, 3)
    assert {tuple(c) for c in palette.palette(3)} <= {tuple(c) for c in np.unique(legend, axis=0)}
    mask = Image.open(out / "1.png")
    assert mask.mode == "P" and mask.size == (56, 48)
    assert mask.getpalette()[:9] == list(palette.voc_palette(3).ravel())
    probs = np.load(out / "1.npy")
    np.testing.assert_array_equal(np.asarray(mask), probs.argmax(-1))
    (root / "val" / "images" / "broken.jpg").unlink()

    assert main(["evaluate", str(checkpoint), "--data", f"images:{root}", "-o", str(tmp_path / "eval"),
                 "--no-progress"]) == 0
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    labels = [np.asarray(Image.open(root / "val" / "masks" / f"{i}.png")) for i in range(3)]
    preds = [np.asarray(Image.open(out / f"{i}.png")) for i in range(3)]
    want = pipelines.bubbliiiing_miou(labels, preds, 3)
    np.testing.assert_allclose(result["iou"], want["iou"], rtol=1e-12)
    np.testing.assert_allclose(result["precision"], want["precision"], rtol=1e-12)
    np.testing.assert_allclose([result["miou_all_classes"], result["mrecall"], result["pixel_acc"]],
                               [want["miou"], want["mpa"], want["accuracy"]], rtol=1e-12)
    assert (tmp_path / "eval" / "confusion.png").is_file() and (tmp_path / "eval" / "iou.png").is_file()


def test_scores_with_ignored_and_absent_classes():
    labels = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    preds = np.array([[0, 2, 1], [1, 0, 0]], np.uint8)
    cm = evaluate.confusion(labels, preds, 4)
    assert cm.sum() == 5 and cm[1, 2] == 1 and cm[1, 0] == 1
    got, want = evaluate.scores(cm), pipelines.bubbliiiing_miou([labels], [preds], 4)
    np.testing.assert_allclose(got["iou"], want["iou"])
    assert got["miou_all_classes"] == pytest.approx(want["miou"]) and got["iou"][3] == 0.0
    # training's mIoU (metrics.summarize) leaves out class 3, absent from labels and predictions
    assert got["miou_present"] == pytest.approx(np.mean(got["iou"][:3]))
    assert got["miou_present"] == pytest.approx(metrics.summarize(cm)["miou"])
    assert got["miou_present"] > got["miou_all_classes"]


def test_recorded_preset_travels(tmp_path):
    """A converted model records its upstream's preset; convert can override it; a saved
    model keeps it."""
    import torch
    config = registry.make_config("semseg_unet", feature_scale=16, n_classes=2)
    checkpoint = tmp_path / "semseg.pth"
    torch.save({"model_state": harness.random_reference(config).state_dict()}, checkpoint)
    assert main(["convert", str(checkpoint), "-o", str(tmp_path / "a"), "--no-verify"]) == 0
    assert recorded.preset_of(unet_jax.load(tmp_path / "a")) == "semseg"
    assert main(["convert", str(checkpoint), "-o", str(tmp_path / "b"), "--no-verify",
                 "--preprocess", "unit"]) == 0
    assert recorded.preset_of(unet_jax.load(tmp_path / "b")) == "unit"
    assert json.loads((tmp_path / "b" / "unet_jax.json").read_text())["preprocess"] == "unit"
