"""Users' files: the upstreams' dataset layouts, mask formats, their errors, `unet-jax data`,
augmentation strings and preprocessing presets."""

import numpy as np
import pytest
from PIL import Image

from unet_jax import presets
from unet_jax.cli import main
from unet_jax.data import augment, layouts
from unet_jax.data import datasets as data

RNG = np.random.default_rng(0)


def _image(path, h=30, w=40, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def _mask(path, h=30, w=40, classes=3, mode="L", scale=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = RNG.integers(0, classes, (h, w), dtype=np.uint8) * scale
    if mode == "P":
        image = Image.fromarray(ids, "P")
        image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    elif mode == "RGB":
        image = Image.fromarray(np.stack([ids, 255 - ids, ids // 2], -1))
    else:
        image = Image.fromarray(ids)
    image.save(path)
    return ids


def write_voc(root, n=5):
    base = root / "VOCdevkit" / "VOC2012"
    names = [f"2012_{i:06d}" for i in range(n)]
    for name in names:
        _image(base / "JPEGImages" / f"{name}.jpg")
        _mask(base / "SegmentationClass" / f"{name}.png", mode="P")
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names[:3]) + "\n")
    (lists / "val.txt").write_text("\n".join(names[3:]) + "\n")
    return base


def write_camvid(root, semseg=False):
    folders = (("train", "trainannot"), ("val", "valannot")) if semseg else (
        ("train_images", "train_labels"), ("valid_images", "valid_labels"))
    for images, labels in folders:
        for i in range(3):
            _image(root / images / f"0001TP_{i:06d}.png")
            _mask(root / labels / f"0001TP_{i:06d}.png", mode="L" if semseg else "RGB")


def write_carvana(root, n=10):
    for i in range(n):
        _image(root / "imgs" / f"car{i:02d}.jpg")
        _mask(root / "masks" / f"car{i:02d}_mask.gif", classes=2, scale=255)


def write_isic(root, n=10):
    for i in range(n):
        _image(root / "train" / f"ISIC_{i:07d}.jpg")
        _mask(root / "train_GT" / f"ISIC_{i:07d}_segmentation.png", classes=2, scale=255)


@pytest.mark.parametrize("kind", ["voc", "camvid", "camvid_semseg", "carvana", "isic", "images"])
def test_layouts_are_detected_and_read(tmp_path, kind):
    """Each layout is detected under its root, split as stated, and read into class ids:
    palette indices, RGB first channels, 0/255 binary masks as 0/1."""
    if kind == "voc":
        write_voc(tmp_path)
    elif kind.startswith("camvid"):
        write_camvid(tmp_path, semseg=kind.endswith("semseg"))
    elif kind == "carvana":
        write_carvana(tmp_path)
    elif kind == "isic":
        write_isic(tmp_path)
    else:
        for i in range(4):
            _image(tmp_path / "images" / f"{i}.png")
            _mask(tmp_path / "masks" / f"{i}.png")
    found = layouts.detect(tmp_path)
    assert found.name == kind.split("_")[0]
    sizes = {k: len(v) for k, v in found.splits.items()}
    expected = {"voc": (3, 2), "camvid": (3, 3), "carvana": (9, 1), "isic": (9, 1), "images": (3, 1)}
    assert (sizes["train"], sizes["val"]) == expected[found.name]
    assert found.binary == (kind in ("carvana", "isic"))
    classes = 2 if found.binary else 3
    ds = data.FileDataset(tuple(found.splits["train"]), classes, height=32, width=32,
                          binary=found.binary)
    image, mask = ds.read(0)
    assert image.shape == (30, 40, 3) and mask.shape == (30, 40)
    assert set(np.unique(mask)) <= set(range(classes)) and len(np.unique(mask)) == classes
    image, mask = ds[0]
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32)
    assert main(["data", str(tmp_path)]) == 0


def test_held_out_split_is_seeded_and_disjoint(tmp_path):
    write_carvana(tmp_path, n=25)
    a, b = layouts.detect(tmp_path), layouts.detect(tmp_path)
    assert a.splits == b.splits and (len(a.splits["train"]), len(a.splits["val"])) == (23, 2)  # round(2.5)
    assert not set(a.splits["train"]) & set(a.splits["val"])


def test_mask_values_and_grayscale(tmp_path):
    """An out-of-range value raises naming the file, or becomes the ignore index on request;
    a 1-channel model reads luminance."""
    _image(tmp_path / "images" / "a.jpg")
    ids = _mask(tmp_path / "masks" / "a.png", classes=5)
    pairs = ((tmp_path / "images" / "a.jpg", tmp_path / "masks" / "a.png"),)
    with pytest.raises(ValueError, match=r"a\.png: mask values \[3, 4\] are neither classes 0..2"):
        data.FileDataset(pairs, 3).read(0)
    _, mask = data.FileDataset(pairs, 3, out_of_range="ignore").read(0)
    np.testing.assert_array_equal(mask, np.where(ids >= 3, 255, ids))
    image, _ = data.FileDataset(pairs, 5, channels=1).read(0)
    assert image.shape == (30, 40, 1)


def test_bad_files_are_named(tmp_path, capsys):
    write_carvana(tmp_path, n=4)
    _image(tmp_path / "imgs" / "car00.jpg", h=20)  # size differs from its mask
    (tmp_path / "imgs" / "car01.jpg").write_bytes(b"not a jpeg")
    assert main(["data", str(tmp_path)]) == 2
    err = capsys.readouterr().out
    assert "car00.jpg is 40x20 but its mask" in err and "car01.jpg: not a readable image" in err
    _image(tmp_path / "imgs" / "lonely.jpg")
    with pytest.raises(layouts.DataLayoutError, match="have no mask in .*masks: lonely.jpg"):
        layouts.detect(tmp_path)
    assert main(["data", str(tmp_path / "imgs")]) == 2
    assert "is not a dataset layout unet-jax reads" in capsys.readouterr().err


def test_augmentation_strings():
    assert augment.parse("") == [] and augment.parse("none") == []
    assert [op for op, _ in augment.parse("bubbliiiing")] == ["jitter", "scale", "crop", "hflip", "hsv"]
    assert augment.parse("scale(0.5,2)+crop") == [("scale", (0.5, 2.0)), ("crop", ())]
    for bad, message in (("rotate(10)", "unknown augmentation 'rotate"),
                         ("scale(2)", "takes 2 argument"), ("scale(2,1)", "need 0 < a <= b")):
        with pytest.raises(ValueError, match=message):
            augment.parse(bad)
    image = RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    mask = RNG.integers(0, 3, (24, 32), dtype=np.uint8)
    run = augment.pipeline("bubbliiiing")
    one, two = (run(image, mask, np.random.default_rng([1, 2, 3])) for _ in range(2))
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_presets_reproduce_the_upstream_inputs():
    """Each preset's device-side normalisation equals the upstream's numpy expression."""
    pixels = RNG.integers(0, 256, (1, 4, 5, 3), dtype=np.uint8)
    x = pixels.astype(np.float64)
    expected = {
        "bubbliiiing": x / 255,
        "semseg": (x[..., ::-1] - [104.00699, 116.66877, 122.67892]) / 255,
        "imgseg": (x / 255 - 0.5) / 0.5,
        "imagenet": (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
        "unit": x / 255, "none": x,
    }
    for name, want in expected.items():
        got = np.asarray(presets.get(name).normalize(pixels))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="unknown preprocessing preset 'bgr'"):
        presets.get("bgr")
