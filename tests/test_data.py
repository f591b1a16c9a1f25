"""Data sources and batching."""

import numpy as np
import pytest
from PIL import Image

from unet_jax import data
from unet_jax.train import TrainConfig, make_datasets


def test_shapes_are_deterministic_and_cover_the_classes():
    ds = data.Shapes(8, height=32, width=40, num_classes=5, seed=3)
    image, mask = ds[2]
    assert image.shape == (32, 40, 3) and image.dtype == np.float32 and mask.shape == (32, 40)
    np.testing.assert_array_equal(ds[2][1], mask)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert set(np.unique(np.concatenate([ds[i][1].ravel() for i in range(8)]))) <= set(range(5))
    with pytest.raises(IndexError):
        ds[8]


def test_batches_are_reproducible_per_epoch():
    ds = data.Shapes(10, height=16, width=16)
    a = data.batches(ds, 4, epoch=1, seed=0)
    assert len(a) == 2 and a[0]["image"].shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(a[1]["mask"], data.batches(ds, 4, epoch=1, seed=0)[1]["mask"])
    assert not np.array_equal(a[0]["mask"], data.batches(ds, 4, epoch=2, seed=0)[0]["mask"])


def _write_split(root, n, size=(20, 12)):
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 3, size[::-1], dtype=np.uint8)).save(
            root / "masks" / f"{i}.png")


def test_image_folders(tmp_path):
    _write_split(tmp_path / "train", 3)
    _write_split(tmp_path / "val", 2)
    train, val = make_datasets(TrainConfig(data=f"folder:{tmp_path}", num_classes=3,
                                           image_size=16))
    assert (len(train), len(val)) == (3, 2)
    image, mask = train[1]
    assert image.shape == (16, 16, 3) and mask.shape == (16, 16) and mask.max() <= 2
    (tmp_path / "train" / "masks" / "2.png").unlink()
    with pytest.raises(ValueError, match="without a mask: \\['2.jpg'\\]"):
        len(data.ImageFolders(str(tmp_path / "train"), 3))
    with pytest.raises(FileNotFoundError, match="nowhere/images not found"):
        len(data.ImageFolders(str(tmp_path / "nowhere"), 3))
    with pytest.raises(ValueError, match="data must be synthetic, folder:PATH or tfds:NAME"):
        make_datasets(TrainConfig(data="s3://bucket"))
