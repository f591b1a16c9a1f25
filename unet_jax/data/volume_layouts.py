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


def channel_file(name: str, ending: str = ".nii.gz") -> tuple[str, int] | None:
    """(CASE, channel) of nnU-Net's CASE_XXXX<ending> file name, else None."""
    if not name.endswith(ending):
        return None
    head, _, index = name[: -len(ending)].rpartition("_")
    return (head, int(index)) if head and len(index) == 4 and index.isdigit() else None


def group_cases(files: list[Path], channels: int) -> tuple[list[tuple[str, list[Path]]], list[str]]:
    """(cases, problems) of NIfTI `files`: nnU-Net's CASE_0000, CASE_0001, ... grouped by CASE
    (every channel present), other files (a single channel, a 4-D file) one per case; an
    incomplete case or two cases of one name are problems, named."""
    groups: dict[Path, dict[int, Path]] = {}
    cases, problems = [], []
    for f in files:
        parsed = channel_file(f.name, ".nii.gz") or channel_file(f.name, ".nii")
        if parsed is None:
            cases.append((nifti.strip_suffix(f.name), [f]))
        else:
            groups.setdefault(f.parent / parsed[0], {})[parsed[1]] = f
    for key, found in groups.items():
        wanted = [f"{key.name}_{c:04d}" for c in range(channels) if c not in found]
        extra = [found[c].name for c in sorted(found) if c >= channels]
        if wanted or extra:
            problems.append(f"case {key.name} ({key.parent}): " + (
                f"missing {', '.join(wanted)}" if wanted else f"{', '.join(extra)} beyond the model's "
                f"{channels} channel(s)") + " (one CASE_XXXX.nii.gz per channel, from _0000; a "
                "single-channel file named NAME_0001.nii.gz reads as channel 1 of NAME: call it "
                "NAME_0001_0000.nii.gz)")
            continue
        cases.append((key.name, [found[c] for c in range(channels)]))
    seen: dict[str, list[Path]] = {}
    for name, paths in cases:
        seen.setdefault(name, []).append(paths[0].parent)
    for name, parents in seen.items():
        if len(parents) > 1:
            problems.append(f"case {name} is in {len(parents)} inputs ({', '.join(map(str, parents))}): its "
                            "results would overwrite each other; predict them into separate folders")
    duplicated = {n for n, p in seen.items() if len(p) > 1}
    return sorted(c for c in cases if c[0] not in duplicated), problems


def _dataset_json(root: Path) -> dict | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if not (root / "imagesTr").is_dir():
            return None  # some other folder's file
        raise ValueError(f"{path} is not readable JSON ({e}): a volume dataset needs it") from e
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
            parsed = channel_file(path.name, ending)
            if parsed is None:
                problems.append(f"{folder}/{path.name}: not CASE_XXXX{ending}")
                continue
            by_case.setdefault(parsed[0], {})[parsed[1]] = path
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
