"""`--data tfds:NAME` without network: a tiny dataset (`tiny_pets`, 40x48 trimaps 1..3) is
built by a builder defined here into a temporary data_dir in array_record format, then read
by `make_datasets` and trained on through the command line; a dataset missing from the
data_dir is one clear error."""

import json
import logging
import sys

import numpy as np
import pytest
from PIL import Image

from unet_jax.cli import main
from unet_jax.data import datasets as data
from unet_jax.train import TrainConfig, make_datasets
from unet_jax.train.inputs import tfds_spec

tfds = pytest.importorskip("tensorflow_datasets")

SPLITS = {"train": 8, "test": 4}
H, W = 40, 48


def colour(split: str, i: int) -> tuple[int, int, int]:
    return (10 * i + 1, 100 if split == "train" else 200, 7)


class TinyPets(tfds.core.GeneratorBasedBuilder):
    """Images of one colour each, trimaps of three bands: 1 (pet), 2 (background), 3 (border)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
        }))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
        trimap = np.repeat(np.arange(1, 4, dtype=np.uint8), [14, 13, 13])[:, None].repeat(W, 1)
        for i in range(SPLITS[split]):
            image = np.full((H, W, 3), colour(split, i), np.uint8)
            # PIL images: tfds encodes numpy images with tensorflow, PIL ones without it
            yield i, {"image": Image.fromarray(image), "segmentation_mask": Image.fromarray(trimap)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    TinyPets(data_dir=root, file_format="array_record").download_and_prepare()
    return root


def test_make_datasets_reads_the_prepared_splits_at_the_training_size(data_dir, monkeypatch):
    cfg = TrainConfig(data="tfds:tiny_pets", tfds_data_dir=str(data_dir), num_classes=4,
                      image_size=32)
    train, val = make_datasets(cfg)
    assert (len(train), len(val)) == (SPLITS["train"], SPLITS["test"])
    for dataset, split in ((train, "train"), (val, "test")):
        samples = [dataset[i] for i in range(len(dataset))]
        assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for image, _ in samples)
        assert all(mask.shape == (32, 32) and mask.dtype == np.uint8 for _, mask in samples)
        assert {tuple(image[5, 5]) for image, _ in samples} == {
            colour(split, i) for i in range(SPLITS[split])}
        assert all(set(np.unique(mask)) == {1, 2, 3} for _, mask in samples)  # stored as is
    # the splits as tfds spells them; a known dataset's masks shifted by its table entry
    monkeypatch.setitem(data.TFDS.MASK_OFFSETS, "tiny_pets", -1)
    train, val = make_datasets(TrainConfig(data="tfds:tiny_pets:train[:6]:train[6:]", num_classes=3,
                                           tfds_data_dir=str(data_dir), image_size=32))
    assert (len(train), len(val)) == (6, 2)
    _, mask = val[0]
    assert set(np.unique(mask)) == {0, 1, 2} and (mask[0, 0], mask[-1, 0]) == (0, 2)


def test_known_datasets_split_spelling_and_a_missing_package(monkeypatch):
    assert data.TFDS("oxford_iiit_pet:4.*.*", "train", 3).offset == -1  # trimaps 1..3 -> 0..2
    assert data.TFDS("oxford_iiit_pet", "train", 3, label_offset=0).offset == 0
    assert tfds_spec("oxford_iiit_pet") == ("oxford_iiit_pet", "train", "test")
    assert tfds_spec("mnist:3.*.*::validation") == ("mnist:3.*.*", "train", "validation")
    assert tfds_spec("pets:1.0.0:train[:90%]:train[90%:]") == ("pets:1.0.0", "train[:90%]",
                                                              "train[90%:]")
    with pytest.raises(ValueError, match="expected tfds:NAME"):
        tfds_spec("a:b:c:d")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ValueError, match=r"tfds:pets needs tensorflow-datasets: pip install"):
        len(data.TFDS("pets", "train", 3))


def test_masks_outside_the_classes_name_the_fix(data_dir):
    train, _ = make_datasets(TrainConfig(data="tfds:tiny_pets", num_classes=3, image_size=32,
                                         tfds_data_dir=str(data_dir)))
    with pytest.raises(ValueError, match=r"mask values .*\[3\].* num_classes=4"):
        train[0]


def test_training_on_the_command_line_writes_metrics(data_dir, tmp_path):
    workdir = tmp_path / "run"
    assert main(["train", "--data", "tfds:tiny_pets", "--tfds-data-dir", str(data_dir),
                 "--arch", "imgseg_unet", "--model", "base_width=4", "--image-size", "32",
                 "--epochs", "1", "--batch-size", "4", "--no-progress",
                 "--workdir", str(workdir)]) == 0
    [epoch] = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert (epoch["epoch"], epoch["step"]) == (1, SPLITS["train"] // 4), epoch
    assert np.isfinite([epoch["train_loss"], epoch["val_loss"]]).all(), epoch


@pytest.mark.parametrize("name", ["tiny_pets", "no_such_set"])
def test_a_dataset_not_prepared_is_one_error_saying_how_to_prepare_it(name, tmp_path, capsys,
                                                                      caplog):
    empty = tmp_path / "empty"
    assert main(["train", "--data", f"tfds:{name}", "--tfds-data-dir", str(empty),
                 "--model", "base_width=4", "--image-size", "32", "--batch-size", "4",
                 "--no-progress", "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: tfds:{name} is not prepared in {empty}: prepare it with "
                          f"`tfds build {name} --data_dir {empty} --file_format array_record`"), err
    assert "--tfds-data-dir DIR" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not empty.exists() and not (tmp_path / "run").exists()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(ValueError, match="tfds_data_dir is for data tfds:NAME"):
        make_datasets(TrainConfig(tfds_data_dir=str(empty)))
