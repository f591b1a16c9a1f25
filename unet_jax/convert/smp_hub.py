"""segmentation_models_pytorch `save_pretrained` folders: `config.json` (every constructor
argument plus `_model_class`) and `model.safetensors`, read with the config taken from
`config.json`, and written back the same way (`from_pretrained` loads them)."""

import json
from pathlib import Path

from unet_jax import atomic, registry
from unet_jax.convert.export import to_torch_state_dict
from unet_jax.convert.io import Checkpoint, CheckpointError, read_safetensors, write_state_dict

CONFIG, WEIGHTS = "config.json", "model.safetensors"
MODEL_CLASSES = {"Unet": "smp_unet", "UnetPlusPlus": "smp_unetplusplus"}
OPTIONS = ("encoder_name", "encoder_depth", "decoder_channels", "decoder_use_norm",
           "decoder_attention_type", "decoder_interpolation", "in_channels", "classes")


def is_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def read_config(folder: Path) -> tuple[str, dict, list[str]]:
    """(arch, upstream options, notes) of a save_pretrained folder's config.json."""
    path = folder / CONFIG
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({e})") from e
    if not isinstance(raw, dict) or raw.get("_model_class") not in MODEL_CLASSES:
        cls = raw.get("_model_class") if isinstance(raw, dict) else None
        raise CheckpointError(f"{path}: _model_class {cls!r} is not one unet-jax ports "
                              f"({', '.join(MODEL_CLASSES)})")
    if raw.get("aux_params") is not None:
        raise CheckpointError(f"{path}: aux_params (smp's classification head) is not ported")
    options = {k: raw[k] for k in OPTIONS if k in raw}
    if raw.get("decoder_use_batchnorm") is not None:  # the older name: the config resolves it as smp
        options["decoder_use_batchnorm"] = raw["decoder_use_batchnorm"]
    if "decoder_channels" in options:
        options["decoder_channels"] = tuple(options["decoder_channels"])
    notes = [f"config from {path} ({raw['_model_class']})"]
    if raw.get("activation") not in (None, "identity"):
        notes.append(f"activation {raw['activation']!r} in {path} is not part of the model: it "
                     "returns logits (unet-jax predict applies softmax / sigmoid)")
    return MODEL_CLASSES[raw["_model_class"]], options, notes


def read_folder(folder: Path) -> Checkpoint:
    """The weights of a save_pretrained folder, with the arch and options its config.json
    states."""
    arch, options, notes = read_config(folder)
    checkpoint = read_safetensors(folder / WEIGHTS)
    checkpoint.notes[:0] = notes
    checkpoint.config = arch, options
    return checkpoint


def save_pretrained(model, directory: str | Path) -> Path:
    """Write an smp model as `save_pretrained` does (config.json + model.safetensors) into a
    new `directory`; nothing is left behind on failure."""
    arch = registry.arch_of_config(model.config)
    classes = {v: k for k, v in MODEL_CLASSES.items()}
    if arch.name not in classes:
        raise ValueError(f"{arch.name} is not an smp model; save_pretrained folders hold "
                         f"{', '.join(classes)} (write a .pth or .safetensors instead)")
    directory = Path(directory).absolute()
    if directory.exists():
        raise FileExistsError(f"{directory} exists; choose a new directory")
    with atomic.staged_directory(directory) as staging:
        config = {"_model_class": classes[arch.name], "activation": None, "aux_params": None,
                  "encoder_weights": None,
                  **{k: getattr(model.config, k) for k in OPTIONS}}
        config["decoder_channels"] = list(config["decoder_channels"])
        (staging / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        write_state_dict(to_torch_state_dict(model), staging / WEIGHTS)
    return directory
