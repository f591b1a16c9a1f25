"""Volume dataset layouts: nnU-Net's raw layout (`dataset.json` with `channel_names`,
`labels`, `file_ending`; `imagesTr/CASE_XXXX.nii.gz` per channel, `labelsTr/CASE.nii.gz`,
optional `imagesTs/`) and the Medical Segmentation Decathlon's (`dataset.json` with
`modality`, `labels`, and `training` / `test` lists of files, multi-channel images 4-D)."""

import dataclasses
import json
from pathlib import Path

import numpy as np

from unet_jax.data import nifti


@dataclasses.dataclass(frozen=True)
class VolumeCase:
    name: str
    images: tuple[Path, ...]  # one per channel (nnU-Net), or one 4-D file (the Decathlon)
    label: Path | None


@dataclasses.dataclass(frozen=True)
class VolumeLayout:
    name: str  # "nnunet" or "msd"
    root: Path
    channels: dict[str, str]
    labels: dict[str, object]
    splits: dict[str, list[VolumeCase]]
    problems: tuple[str, ...] = ()  # files missing or unmatched, by name


def _dataset_json(root: Path) -> dict | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({e})") from e
    return data if isinstance(data, dict) else None


def detect(root: str | Path) -> VolumeLayout | None:
    """The volume layout at `root`, or None where it holds none."""
    root = Path(root)
    data = _dataset_json(root) if root.is_dir() else None
    if data is None:
        return None
    if isinstance(data.get("training"), list):
        return _msd(root, data)
    if "channel_names" in data and (root / "imagesTr").is_dir():
        return _nnunet(root, data)
    return None


def _nnunet(root: Path, data: dict) -> VolumeLayout:
    channels = {str(k): str(v) for k, v in data["channel_names"].items()}
    ending = data.get("file_ending", ".nii.gz")
    problems, splits = [], {}
    for split, folder, labelled in (("train", "imagesTr", True), ("test", "imagesTs", False)):
        if not (root / folder).is_dir():
            continue
        by_case: dict[str, dict[int, Path]] = {}
        for path in sorted((root / folder).iterdir()):
            stem = path.name[: -len(ending)] if path.name.endswith(ending) else None
            head, _, index = (stem or "").rpartition("_")
            if not head or len(index) != 4 or not index.isdigit():
                problems.append(f"{folder}/{path.name}: not CASE_XXXX{ending}")
                continue
            by_case.setdefault(head, {})[int(index)] = path
        cases = []
        for name, files in by_case.items():
            missing = [f"{name}_{int(c):04d}{ending}" for c in channels if int(c) not in files]
            if missing:
                problems.append(f"{folder}: case {name} lacks {', '.join(missing)}")
                continue
            label = root / "labelsTr" / f"{name}{ending}" if labelled else None
            if label is not None and not label.is_file():
                problems.append(f"labelsTr/{name}{ending}: missing (the label of {folder}/{name})")
                label = None
            cases.append(VolumeCase(name, tuple(files[int(c)] for c in sorted(channels, key=int)), label))
        splits[split] = cases
    return VolumeLayout("nnunet", root, channels, dict(data.get("labels", {})), splits, tuple(problems))


def _msd(root: Path, data: dict) -> VolumeLayout:
    channels = {str(k): str(v) for k, v in data.get("modality", {}).items()}
    labels = {str(v): int(k) for k, v in data.get("labels", {}).items()}
    problems, splits = [], {}
    for split, entries in (("train", data.get("training", [])), ("test", data.get("test", []))):
        cases = []
        for entry in entries:
            image = root / (entry["image"] if isinstance(entry, dict) else entry)
            label = root / entry["label"] if isinstance(entry, dict) and "label" in entry else None
            for path in (image, label):
                if path is not None and not path.is_file():
                    problems.append(f"{path.relative_to(root)}: listed in dataset.json, missing")
            if image.is_file():
                cases.append(VolumeCase(nifti.strip_suffix(image.name), (image,),
                                        label if label is not None and label.is_file() else None))
        splits[split] = cases
    return VolumeLayout("msd", root, channels, labels, splits, tuple(problems))


def survey(case: VolumeCase, read_label: bool) -> tuple[tuple[int, ...], tuple[float, ...], set]:
    """(size (z, y, x), spacing (z, y, x), label values) of a case from its headers (and its
    label's voxels when `read_label`); VolumeFileError names a file that does not fit."""
    facts = []
    for path in case.images:
        facts.append(nifti.header_facts(nifti.load(path)))
    size, spacing = facts[0]
    for path, (other, _) in zip(case.images[1:], facts[1:], strict=True):
        if other != size:
            raise nifti.VolumeFileError(f"{path.name}: size {other} differs from "
                                        f"{case.images[0].name}'s {size}")
    values = set()
    if case.label is not None:
        image = nifti.load(case.label)
        label_size, _ = nifti.header_facts(image)
        if label_size != size:
            raise nifti.VolumeFileError(f"{case.label.name}: label size {label_size} differs from the "
                                        f"image's {size}")
        if read_label:
            values = set(np.unique(np.asarray(image.dataobj)).astype(int).tolist())
    return size, spacing, values
