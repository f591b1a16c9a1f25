"""Data sources and batching."""

import numpy as np
import pytest
from PIL import Image

from unet_jax.data import datasets as data
from unet_jax.data import pipeline
from unet_jax.train import TrainConfig, make_datasets


def test_shapes_are_deterministic_and_cover_the_classes():
    ds = data.Shapes(8, height=32, width=40, num_classes=5, seed=3)
    image, mask = ds[2]
    assert image.shape == (32, 40, 3) and image.dtype == np.uint8 and mask.shape == (32, 40)
    np.testing.assert_array_equal(ds[2][1], mask)
    assert image.max() - image.min() > 100  # the full uint8 range, not [0, 1] floats
    assert set(np.unique(np.concatenate([ds[i][1].ravel() for i in range(8)]))) <= set(range(5))
    with pytest.raises(IndexError):
        ds[8]


def test_batches_are_reproducible_per_epoch():
    ds = data.Shapes(10, height=16, width=16)
    a = pipeline.batches(ds, 4, epoch=1, seed=0)
    assert len(a) == 2 and a[0]["image"].shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(a[1]["mask"], pipeline.batches(ds, 4, epoch=1, seed=0)[1]["mask"])
    assert not np.array_equal(a[0]["mask"], pipeline.batches(ds, 4, epoch=2, seed=0)[0]["mask"])


def test_each_process_reads_only_its_rows_and_prefetching_changes_nothing(monkeypatch):
    """Two processes' rows of every global batch are the one-process batch, split; each
    process decodes only its own samples; threads return the same batches in order."""
    ds = data.Shapes(13, height=8, width=8)
    whole = pipeline.batches(ds, 6, epoch=2, seed=1)
    read = []
    monkeypatch.setattr(data.Shapes, "__getitem__",
                        lambda self, i, get=data.Shapes.__getitem__: read.append(i) or get(self, i))
    parts = [pipeline.batches(ds, 6, epoch=2, seed=1, process_index=p, process_count=2)
             for p in range(2)]
    assert len(whole) == len(parts[0]) == 2
    for b in range(2):
        read.clear()
        local = parts[1][b]
        assert len(read) == 3  # its 3 rows, not the 6 of the global batch
        for key in ("image", "mask"):
            np.testing.assert_array_equal(np.concatenate([parts[0][b][key], local[key]]),
                                          whole[b][key])
    samples = pipeline.epoch_samples(ds, 6, epoch=2, seed=1)
    threaded = list(pipeline.prefetched(samples, 6, 1, threads=3))
    assert len(threaded) == 1
    np.testing.assert_array_equal(threaded[0]["image"], whole[1]["image"])


def test_validation_batches_cover_every_sample_once_per_process():
    from unet_jax.data.pipeline import padded_batches
    ds = data.Shapes(10, height=8, width=8)
    seen = []
    for p in range(2):
        for batch, real in padded_batches(ds, 4, 255, threads=2, process_index=p, process_count=2):
            assert batch["image"].shape == (2, 8, 8, 3) and real in (4, 2)
            seen += [m for m in batch["mask"] if not (m == 255).all()]
    assert len(seen) == 10
    want = sorted(ds[i][1].tobytes() for i in range(10))
    assert sorted(m.tobytes() for m in seen) == want


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
    with pytest.raises(ValueError, match="have no mask in .*train/masks: 2.jpg"):
        make_datasets(TrainConfig(data=f"folder:{tmp_path}", num_classes=3, image_size=16))
    with pytest.raises(ValueError, match="nowhere is not a directory"):
        make_datasets(TrainConfig(data=f"folder:{tmp_path / 'nowhere'}", num_classes=3))
    with pytest.raises(ValueError, match="data must be synthetic, folder:PATH, voc:PATH"):
        make_datasets(TrainConfig(data="s3://bucket"))


def test_augmentation_is_fixed_by_seed_epoch_and_position():
    """Image and mask get the same crop and flip; the same (seed, epoch, position) gives the
    same sample (exact resume), another epoch another one; sizes and classes are kept."""
    from unet_jax.data import augment
    ds = data.Shapes(6, height=24, width=32, num_classes=4)
    kwargs = dict(epoch=3, seed=5, augment=augment.pipeline("bubbliiiing"))
    a, b = pipeline.epoch_samples(ds, 3, **kwargs), pipeline.epoch_samples(ds, 3, **kwargs)
    other = pipeline.epoch_samples(ds, 3, **dict(kwargs, epoch=4))
    plain = pipeline.epoch_samples(ds, 3, epoch=3, seed=5)
    for i in range(6):
        assert a[i]["image"].shape == (24, 32, 3) and a[i]["mask"].shape == (24, 32)
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        assert set(np.unique(a[i]["mask"])) <= set(np.unique(plain[i]["mask"])) | {255}
    assert any(not np.array_equal(a[i]["mask"], other[i]["mask"]) for i in range(6))
    assert any(not np.array_equal(a[i]["mask"], plain[i]["mask"]) for i in range(6))
    # the same geometry for both: an image that is its mask x 100 stays so (but for edges)
    mask = np.ones((24, 32), np.uint8)
    mask[:, 20:] = 2
    image = np.repeat((mask * 100)[..., None], 3, axis=-1)
    geometry = augment.pipeline("jitter(0.3)+scale(0.25,2)+crop+hflip+vflip")
    for seed in range(8):
        out_image, out_mask = geometry(image, mask, np.random.default_rng(seed))
        assert out_image.dtype == np.uint8 and out_mask.dtype == np.uint8
        padded = out_mask == 255  # zoomed out: grey image, ignored mask
        near = np.zeros_like(padded)  # within 2 px of the sample: bilinear blends there
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near |= np.roll(~padded, (dy, dx), (0, 1))
        assert (out_image[padded & ~near] == 128).all()
        values, labels = out_image[..., 0][~padded], out_mask[~padded]
        flat = np.isin(values, (100, 200))  # away from edges (bicubic vs nearest there)
        assert flat.mean() > 0.5 and (values[flat] == labels[flat] * 100).mean() > 0.97
