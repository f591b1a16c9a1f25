"""`unet-jax data` on volume datasets: nnU-Net's raw layout and the Decathlon's, reported from
the NIfTI headers (and label voxels), bad files named, exit 2 when any."""

import json

import numpy as np
import pytest

from unet_jax.cli.main import main

nib = pytest.importorskip("nibabel")


def _save(array_zyx, path, spacing=(0.9, 0.8, 2.5)):
    nib.save(nib.Nifti1Image(array_zyx.transpose(2, 1, 0), np.diag([*spacing, 1.0])), str(path))


def test_nnunet_raw_layout_is_reported_and_bad_files_named(tmp_path, capsys):
    root = tmp_path / "Dataset001_X"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "T2"},
                                                   "labels": {"background": 0, "a": 1},
                                                   "file_ending": ".nii.gz"}))
    for i, shape in enumerate([(6, 8, 9), (7, 8, 10)]):
        for c in range(2):
            _save(np.zeros(shape, np.float32), root / "imagesTr" / f"c{i}_{c:04d}.nii.gz")
        label = np.eye(1, shape[2], dtype=np.uint8)[0] * np.ones(shape, np.uint8)
        _save(label, root / "labelsTr" / f"c{i}.nii.gz")
    assert main(["data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "layout:  nnunet" in out and "channels: 0 CT, 1 T2" in out
    assert "train: 2 cases; size (z, y, x) 6/6.5/7 x 8/8/8 x 9/9.5/10" in out
    assert "label values 0, 1" in out and "2.5/2.5/2.5" in out
    (root / "imagesTr" / "c1_0001.nii.gz").unlink()
    _save(np.full((6, 8, 9), 7, np.uint8), root / "labelsTr" / "c0.nii.gz")
    (root / "imagesTr" / "notes.txt").write_text("x")
    assert main(["data", str(root)]) == 2
    out = capsys.readouterr().out
    assert "case c1 lacks c1_0001.nii.gz" in out
    assert "imagesTr/notes.txt: not CASE_XXXX.nii.gz" in out
    assert "label values [7] are not in dataset.json's labels" in out


def test_decathlon_layout_with_4d_images(tmp_path, capsys):
    root = tmp_path / "Task01"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = nib.Nifti1Image(np.zeros((9, 8, 6, 2), np.float32), np.eye(4))
    nib.save(image, str(root / "imagesTr" / "b_1.nii.gz"))
    _save(np.zeros((6, 8, 9), np.uint8), root / "labelsTr" / "b_1.nii.gz", spacing=(1, 1, 1))
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w"}, "labels": {"0": "background", "1": "edema"},
        "training": [{"image": "./imagesTr/b_1.nii.gz", "label": "./labelsTr/b_1.nii.gz"},
                     {"image": "./imagesTr/b_2.nii.gz", "label": "./labelsTr/b_2.nii.gz"}], "test": []}))
    assert main(["data", str(root)]) == 2
    out = capsys.readouterr().out
    assert "layout:  msd" in out and "channels: 0 FLAIR, 1 T1w" in out and "background 0, edema 1" in out
    assert "train: 1 cases; size (z, y, x) 6/6/6 x 8/8/8 x 9/9/9" in out
    assert "imagesTr/b_2.nii.gz: listed in dataset.json, missing" in out
