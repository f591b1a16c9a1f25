"""Reading torch checkpoints as users have them: .pth/.pt/.bin (torch's zip or legacy
pickle, loaded with weights_only=True so no pickled code runs) and .safetensors; unwrapping
`{"state_dict": ...}`-style wrappers and `module.` prefixes."""

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

WRAPPERS = ("state_dict", "model_state_dict", "model")


class CheckpointError(ValueError):
    """A file or mapping that cannot be read as a torch state_dict."""


def _to_numpy(value: Any, key: str, source: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: copy out, `.numpy()` shares memory
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy().copy()
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        return np.array(value)
    raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                          "expected a state_dict of tensors")


def unwrap(obj: Any, source: str) -> dict[str, np.ndarray]:
    """The state_dict inside `obj` as {key: np.ndarray}, wrappers and `module.` removed."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state_dict "
                              "(a mapping of parameter names to tensors)")
    for wrapper in WRAPPERS:
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not obj:
        raise CheckpointError(f"{source} holds an empty state_dict")
    bad = [k for k in obj if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{source}: keys must be strings, got {bad[:3]!r}")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel/DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {k: _to_numpy(v, k, source) for k, v in obj.items()}


def _load_torch_file(path: Path) -> Any:
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"reading {path} needs torch: pip install 'unet-jax[torch]' "
                              "(or convert it to .safetensors)") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled objects other than tensors, "
                "which could run code (torch.load weights_only=True rejected it). Re-save it "
                "as `torch.save(model.state_dict(), path)` from code you trust.") from e
        raise CheckpointError(f"{path} is not a torch checkpoint ({e})") from e
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0]})") from e


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({e})") from e


def read_state_dict(source: str | os.PathLike | Mapping) -> tuple[dict[str, np.ndarray], str]:
    """The state_dict in `source` (a path or a mapping) and a label naming it for messages."""
    if isinstance(source, Mapping):
        return unwrap(source, "the state_dict"), "the state_dict"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    label = f"checkpoint {str(path)!r}"
    obj = _load_safetensors(path) if path.suffix == ".safetensors" else _load_torch_file(path)
    return unwrap(obj, label), label


def write_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write a state_dict as .safetensors or, for any other suffix, torch.save; atomically."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose a new file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file
            save_file({k: np.array(v, order="C") for k, v in state.items()}, partial)
        else:
            try:
                import torch
            except ImportError as e:
                raise CheckpointError(f"writing {path} needs torch: pip install "
                                      "'unet-jax[torch]', or write .safetensors") from e
            torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, partial)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
