"""Reading torch checkpoints as users have them, and writing state_dicts.

Files are sniffed by content: torch's zip format, the legacy pickle format, safetensors.
Torch files load with `torch.load(weights_only=True)` plus numpy's scalar and array types
(`safe_globals`); files that it refuses, whole-model pickles among them, are read by the
restricted unpickler of `torch_pickle`, which runs nothing the file names. The state_dict is
then found inside the wrappers training scripts write (`model_state`, `state_dict`, ...),
prefixes such as `module.` are removed, and everything that is not a tensor is reported as
ignored.
"""

import dataclasses
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from unet_jax import atomic
from unet_jax.convert import torch_pickle

# Wrapper keys of real training scripts, in the order they are tried.
WRAPPERS = ("model_state", "state_dict", "model_state_dict", "model", "net", "network",
            "weights", "params", "module", "ema_state_dict", "unet")
# Prefixes removed when every key has one: DataParallel/DDP, Lightning and wrappers, torch.compile.
PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
# Tensors that profiling tools attach to every module (thop's `profile`).
BOOKKEEPING = ("total_ops", "total_params")
# Image formats told by their first bytes, so an image passed as a model is named as one.
IMAGES = {"PNG": lambda h: h.startswith(b"\x89PNG"), "JPEG": lambda h: h.startswith(b"\xff\xd8\xff"),
          "GIF": lambda h: h.startswith(b"GIF8"), "BMP": lambda h: h.startswith(b"BM"),
          "TIFF": lambda h: h[:4] in (b"II*\x00", b"MM\x00*"),
          "WebP": lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP"}


class CheckpointError(ValueError):
    """A file or mapping that cannot be read as a torch state_dict."""


@dataclasses.dataclass
class Checkpoint:
    """A state_dict as read: tensors as numpy arrays, what was ignored and how it was found."""

    tensors: dict[str, np.ndarray]
    label: str  # names the source in messages
    ignored: list[str] = dataclasses.field(default_factory=list)  # "key (why)"
    notes: list[str] = dataclasses.field(default_factory=list)  # how the state_dict was found
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # plain non-tensor entries
    config: tuple[str, dict] | None = None  # (arch, options) stated beside the weights (smp)
    prefix: str = ""  # removed from every key (`module.`, ...): keys as stored = prefix + key


def _is_tensor(value: Any) -> bool:
    return (isinstance(value, np.ndarray | torch_pickle.Tensor)
            or (hasattr(value, "detach") and hasattr(value, "shape")))


def to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: copy out, `.numpy()` shares memory
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy().copy()
    array = np.array(value)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def _describe(value: Any) -> str:
    if isinstance(value, torch_pickle.Placeholder):
        return f"an object of {value._global}, not loaded"
    name = type(value).__name__
    if type(value).__module__.startswith("numpy"):
        name = f"numpy.{name}"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _has_tensors(obj: Any, depth: int = 3) -> bool:
    """Whether `obj` is, or wraps (through string-keyed mappings), a module or a mapping
    of tensors."""
    if torch_pickle.is_module(obj):
        return True
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        return False
    return any(_is_tensor(v) for v in obj.values()) or (
        depth > 1 and any(_has_tensors(v, depth - 1) for v in obj.values()))


def _find_state_dict(obj: Any, ck: Checkpoint) -> Mapping:
    """Descend through wrappers to the mapping of tensors, recording what is left aside."""
    keys: list[str] = []  # the wrapper keys descended through
    while True:
        where = "".join(f"[{k!r}]" for k in keys)
        if torch_pickle.is_module(obj):
            ck.notes.append(f"a whole-model pickle{' under ' + where if where else ''}: its "
                            "module state was read, its classes were not imported or run")
            return torch_pickle.module_state_dict(obj)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{ck.label}{where} holds {_describe(obj)}, not a state_dict "
                                  "(a mapping of parameter names to tensors)")
        if any(_is_tensor(v) for v in obj.values()):
            return obj
        inner = [k for k in WRAPPERS if _has_tensors(obj.get(k))]
        inner = inner or [k for k, v in obj.items() if _has_tensors(v)]
        if len(inner) != 1:
            found = f"several candidates: {', '.join(map(repr, inner))}" if inner else "none"
            raise CheckpointError(
                f"{ck.label}{where} holds no state_dict of tensors ({found}; entries: "
                f"{', '.join(map(str, list(obj)[:8]))}). Pass the state_dict itself, e.g. "
                "unet_jax.load_torch(torch.load(path)['<key>'])")
        ck.ignored += [f"{where}{k!r} ({_describe(v)})" if where else f"{k} ({_describe(v)})"
                       for k, v in obj.items() if k != inner[0]]
        ck.notes.append(f"state_dict found under {where}[{inner[0]!r}]")
        keys.append(inner[0])
        obj = obj[inner[0]]


def unwrap(obj: Any, label: str) -> Checkpoint:
    """The state_dict inside `obj` as a `Checkpoint`: wrappers and prefixes removed,
    non-tensor entries and profiling buffers reported as ignored."""
    ck = Checkpoint({}, label)
    state = _find_state_dict(obj, ck)
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{label}: keys must be strings, got {bad[:3]!r}")
    tensors = {}
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in BOOKKEEPING:
            ck.ignored.append(f"{key} (profiling buffer)")
        elif _is_tensor(value):
            tensors[key] = value
        else:
            ck.ignored.append(f"{key} ({_describe(value)})")
            if isinstance(value, int | float | str | list | tuple | bool):
                ck.extras[key] = value
    if not tensors:
        raise CheckpointError(f"{label} holds no tensors"
                              + (f" (entries: {', '.join(ck.ignored[:6])})" if ck.ignored else ""))
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
            ck.notes.append(f"prefix {prefix!r} removed")
            ck.prefix += prefix
    try:
        ck.tensors = {k: to_numpy(v) for k, v in tensors.items()}
    except torch_pickle.UnsafePickleError as e:
        raise CheckpointError(f"{label} is damaged: {e}") from e
    return ck


def sniff(path: Path) -> str:
    """'zip', 'pickle', 'safetensors', 'tar' or 'empty', read off the first bytes; else a
    CheckpointError saying what the file looks like."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 2**27:
        return "safetensors"  # an 8-byte header length, then the JSON header
    if head[257:262] == b"ustar":
        return "tar"
    image = next((name for name, test in IMAGES.items() if test(head)), None)
    if image:
        raise CheckpointError(f"{path} is a {image} image, not a model checkpoint")
    shown = head[:16].decode("latin-1").encode("unicode_escape").decode()
    raise CheckpointError(f"{path} is not a torch checkpoint or a safetensors file "
                          f"(it starts with {shown!r})")


def _numpy_safe_globals() -> list:
    """numpy scalars and arrays (e.g. pytorch-semseg's `best_iou`), under the names of
    numpy 2 (`numpy._core`) and numpy 1 (`numpy.core`)."""
    core = np._core.multiarray
    named = [(core.scalar, "scalar"), (core._reconstruct, "_reconstruct")]
    return ([np.dtype, np.ndarray, *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFD"}]
            + [fn for fn, _ in named] + [(fn, f"numpy.core.multiarray.{n}") for fn, n in named])


def load_torch_file(path: Path, label: str) -> tuple[Any, list[str]]:
    """The unpickled object and notes; torch.load when torch is installed, else (and for
    files it refuses) the restricted unpickler."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True), []
        except pickle.UnpicklingError as e:
            if "Weights only load failed" not in str(e):
                raise CheckpointError(f"{label} is truncated or not a torch checkpoint "
                                      f"({str(e).splitlines()[0]})") from e
        except Exception as e:  # torch raises many types for a damaged or foreign file
            raise CheckpointError(f"{label} is truncated or not a torch checkpoint "
                                  f"({type(e).__name__}: {str(e).splitlines()[0]})") from e
    try:
        obj, placeholders = torch_pickle.load_bytes(path.read_bytes())
    except (torch_pickle.UnsafePickleError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{label} is truncated or not a torch checkpoint ({e})") from e
    notes = []
    if placeholders:
        shown = ", ".join(sorted(placeholders)[:5]) + (", ..." if len(placeholders) > 5 else "")
        notes.append(f"read without running code: {len(placeholders)} classes/functions it "
                     f"names were recorded, not imported ({shown})")
    return obj, notes


def _load_safetensors(path: Path, label: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{label} is truncated or not a safetensors file ({e})") from e


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".pkl", ".ckpt", ".safetensors")


def describe_files(folder: Path) -> str:
    """The checkpoint files in `folder`, as advice."""
    files = sorted(p.name for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
    if files:
        return f"it holds {', '.join(files[:5])}: pass one of these files"
    return "it holds no checkpoint file, saved model or training workdir"


def read_safetensors(path: Path) -> Checkpoint:
    """The state_dict of a .safetensors file."""
    return unwrap(_load_safetensors(path, str(path)), str(path))


def read_state_dict(source: str | os.PathLike | Mapping) -> Checkpoint:
    """The state_dict in `source` (a path or a mapping), as a `Checkpoint`."""
    if isinstance(source, Mapping):
        return unwrap(source, "the state_dict")
    path = Path(source)
    label = str(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file; {describe_files(path)}")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    kind = sniff(path)
    if kind == "empty":
        raise CheckpointError(f"{label} is empty (0 bytes): an interrupted download or save?")
    if kind == "tar":
        raise CheckpointError(f"{label} is in torch's tar format (torch < 0.4); load it with an "
                              "old torch and re-save with torch.save(model.state_dict(), path)")
    if kind == "safetensors":
        return unwrap(_load_safetensors(path, label), label)
    obj, notes = load_torch_file(path, label)
    ck = unwrap(obj, label)
    ck.notes[:0] = notes
    return ck


def write_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write a state_dict as .safetensors or, for any other suffix, torch.save; atomically."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose a new file name")
    try:
        with atomic.staged_file(path) as partial:
            if path.suffix == ".safetensors":
                from safetensors import SafetensorError
                from safetensors.numpy import save_file
                try:
                    save_file({k: np.array(v, order="C") for k, v in state.items()}, partial)
                except SafetensorError as e:  # its I/O errors
                    raise OSError(str(e)) from e
            else:
                try:
                    import torch
                except ImportError as e:
                    raise CheckpointError(f"writing {path} needs torch: pip install "
                                          "'unet-jax[torch]', or write .safetensors") from e
                try:
                    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, partial)
                except RuntimeError as e:  # torch's zip writer reports a failed write so
                    raise OSError(f"a write failed (a full disk?): {str(e).splitlines()[0]}") from e
    except OSError as e:
        raise OSError(f"could not write {path} ({e}); nothing was left there") from e
    return path
