"""NIfTI volumes (`.nii`, `.nii.gz`, through nibabel) in nnU-Net's array order.

nnU-Net's default reader (SimpleITK) returns a volume's voxels as (z, y, x) and its spacing
in the same order; `read_case` gives that: the file's voxel array transposed, float32, one
channel per file stacked first, (C, z, y, x). Written segmentations take the header and
affine of the case's first file, so spacing, orientation and origin are the input's.
"""

import dataclasses
import zlib
from pathlib import Path

import numpy as np

SUFFIXES = (".nii.gz", ".nii")


class VolumeFileError(ValueError):
    """A volume file that cannot be read or does not fit its case."""


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(SUFFIXES)


def strip_suffix(name: str) -> str:
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclasses.dataclass
class Case:
    """One case: `data` (C, z, y, x) float32, `spacing` (z, y, x) in mm, and the nibabel image
    of its first file (header and affine for writing results)."""

    data: np.ndarray
    spacing: tuple[float, ...]
    reference: object  # nibabel.Nifti1Image


def _nibabel():
    try:
        import nibabel
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("reading NIfTI volumes needs nibabel: pip install nibabel") from e
    return nibabel


def load(path: str | Path):
    """The nibabel image of `path`, with a clear error for a file that is not NIfTI."""
    nib = _nibabel()
    try:
        return nib.load(str(path))
    except (OSError, nib.filebasedimages.ImageFileError, EOFError, ValueError, zlib.error) as e:
        raise VolumeFileError(f"{path}: not a readable NIfTI file ({e})") from e


def header_facts(image) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(shape, spacing) of a nibabel image in (z, y, x) order, without reading its voxels."""
    if len(image.shape) < 3:
        raise VolumeFileError(f"a {len(image.shape)}-D NIfTI image {tuple(image.shape)}: volumes are 3-D "
                              "(or 4-D with channels); predict 2-D images from PNG / TIFF files")
    shape = tuple(int(n) for n in image.shape[:3])
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return shape[::-1], zooms[::-1]


def voxels(image, path) -> np.ndarray:
    """The voxels of a 3-D image as float32 (z, y, x); a 4-D image gives (C, z, y, x)."""
    try:
        array = np.asarray(image.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError, MemoryError, zlib.error) as e:
        raise VolumeFileError(f"{path}: its voxels cannot be read ({e})") from e
    if array.ndim == 3:
        return array.transpose(2, 1, 0)
    if array.ndim == 4:  # the Decathlon's multi-modal files: (x, y, z, c)
        return array.transpose(3, 2, 1, 0)
    raise VolumeFileError(f"{path}: a {array.ndim}-D NIfTI image; volumes are 3-D (or 4-D with channels)")


def read_case(paths: list[str | Path]) -> Case:
    """A case from its channel files (nnU-Net's CASE_0000, CASE_0001, ... in order, or one
    4-D file); every channel must share the first's size and spacing."""
    if not paths:
        raise VolumeFileError("a case needs at least one channel file")
    channels, reference, facts = [], None, None
    for path in paths:
        image = load(path)
        try:
            found = header_facts(image)
        except VolumeFileError as e:
            raise VolumeFileError(f"{path}: {e}") from None
        if reference is None:
            reference, facts = image, found
        elif found[0] != facts[0] or not np.allclose(found[1], facts[1], rtol=1e-4):
            raise VolumeFileError(f"{path}: size {found[0]} spacing {found[1]} differs from the case's "
                                  f"first channel {paths[0]} ({facts[0]}, {facts[1]})")
        array = voxels(image, path)
        channels.extend(array if array.ndim == 4 else [array])
    return Case(np.stack(channels), facts[1], reference)


def write_like(array: np.ndarray, reference, path: str | Path) -> None:
    """Write `array` (z, y, x) as a NIfTI with `reference`'s header and affine (its
    spacing, orientation and origin); integer labels as uint8 (uint16 past 255)."""
    nib = _nibabel()
    if array.shape[::-1] != tuple(reference.shape[:3]):
        raise VolumeFileError(f"a result of shape {array.shape[::-1]} (x, y, z) does not fit the "
                              f"input's {tuple(reference.shape[:3])}")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)
    header = reference.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_data_shape(array.shape[::-1])
    image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), reference.affine, header)
    image.header["scl_slope"], image.header["scl_inter"] = 1.0, 0.0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
