"""Model folders whose networks come through the importer: smp `save_pretrained` folders of
any architecture / encoder (smp builds the module from config.json) and nnU-Net trained-model
folders (`plans.json`, `dataset.json`, `fold_N/checkpoint_final.pth`; the network built by
dynamic_network_architectures from the plans' `architecture` entry, one model per fold)."""

import importlib
import json
from pathlib import Path

from flax import nnx

from unet_jax.convert import smp_hub
from unet_jax.convert.io import CheckpointError, load_torch_file, unwrap
from unet_jax.convert.torch_export import import_torch
from unet_jax.convert.torch_packages import import_smp

SMP_EXAMPLE = 256  # the export's example size for smp nets (every smp arch takes it)
NNUNET_FILES = ("plans.json", "dataset.json")


def is_nnunet_folder(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in NNUNET_FILES) and any(
        path.glob("fold_*/checkpoint_*.pth"))


NATIVE_ENCODERS = ("resnet18", "resnet34", "resnet50")


def smp_needs_import(folder: Path) -> bool:
    """A save_pretrained folder that the native smp_unet / smp_unetplusplus do not take
    (another architecture or encoder, or smp's classification head)."""
    config = read_json(folder / smp_hub.CONFIG)
    return (config.get("_model_class") not in smp_hub.MODEL_CLASSES
            or config.get("encoder_name", "resnet34") not in NATIVE_ENCODERS
            or config.get("aux_params") is not None)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({e})") from e


def import_smp_folder(folder: Path) -> nnx.Module:
    """An smp save_pretrained folder of any architecture, built by smp and imported."""
    import torch
    smp = import_smp()
    config = read_json(folder / smp_hub.CONFIG)
    try:
        module = smp.from_pretrained(str(folder)).eval()
    except Exception as e:  # noqa: BLE001 (smp raises what its constructors raise)
        raise CheckpointError(f"segmentation_models_pytorch could not build {folder} "
                              f"({type(e).__name__}: {e})") from e
    example = torch.zeros(1, config.get("in_channels", 3), SMP_EXAMPLE, SMP_EXAMPLE)
    origin = {"kind": "smp", "config": config}
    return import_torch(module, example, origin=origin)


def _locate(name: str):
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise CheckpointError(f"{name} (named by the plans) cannot be imported: {e}. "
                              "pip install dynamic-network-architectures") from e


def nnunet_network(plans: dict, dataset: dict, configuration: str, deep_supervision: bool = False):
    """(torch network, configuration entry) of an nnU-Net configuration, as nnU-Net builds
    it (deep supervision off: for inference); freshly initialised as nnU-Net initialises it
    (the network's own `initialize`, He with slope 1e-2)."""
    configs = plans.get("configurations", {})
    if configuration not in configs:
        raise CheckpointError(f"plans.json has no configuration {configuration!r} "
                              f"(it has {', '.join(configs)})")
    entry = configs[configuration]
    while "architecture" not in entry and "inherits_from" in entry:
        parent = configs[entry["inherits_from"]]
        entry = {**parent, **{k: v for k, v in entry.items() if k != "inherits_from"}}
    arch = entry["architecture"]
    kwargs = dict(arch["arch_kwargs"])
    for key in arch.get("_kw_requires_import", ()):
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(kwargs[key])
    network = _locate(arch["network_class_name"])(
        input_channels=module_channels(dataset), num_classes=segmentation_heads(dataset), **kwargs,
        deep_supervision=deep_supervision)
    if hasattr(network, "initialize"):
        network.apply(network.initialize)
    return network, entry


def read_fold(folder: Path, fold_dir: Path) -> tuple[dict, dict, str] | None:
    """(checkpoint, {state_dict name: array}, configuration) of one fold's
    checkpoint_final.pth (else checkpoint_best.pth); None where it has neither."""
    files = [fold_dir / n for n in ("checkpoint_final.pth", "checkpoint_best.pth")
             if (fold_dir / n).is_file()]
    if not files:
        return None
    raw, _ = load_torch_file(files[0], str(files[0]))
    init = raw.get("init_args", {}) if isinstance(raw, dict) else {}
    configuration = init.get("configuration") or folder.name.rpartition("__")[2]
    return raw, unwrap(raw, str(files[0])).tensors, configuration


def import_nnunet_folder(folder: Path, folds=None) -> dict[str, nnx.Module]:
    """{"fold_N": model} of an nnU-Net trained-model folder (checkpoint_final.pth, else
    checkpoint_best.pth per fold), each recording the configuration, its mirroring axes and
    the plans."""
    import torch
    plans, dataset = read_json(folder / "plans.json"), read_json(folder / "dataset.json")
    models = {}
    for fold_dir in sorted(p for p in folder.glob("fold_*") if p.is_dir()):
        fold = fold_dir.name.removeprefix("fold_")
        if folds is not None and fold not in {str(f) for f in folds}:
            continue
        found = read_fold(folder, fold_dir)
        if found is None:
            continue
        raw, tensors, configuration = found
        module, entry = nnunet_network(plans, dataset, configuration)
        module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=True)
        example = torch.zeros(1, module_channels(dataset), *entry.get("patch_size"))
        origin = {"kind": "nnunet", "configuration": configuration, "fold": fold,
                  "inference_allowed_mirroring_axes": raw.get("inference_allowed_mirroring_axes"),
                  "trainer": raw.get("trainer_name"), "plans": plans, "dataset": dataset}
        models[f"fold_{fold}"] = import_torch(module.eval(), example, origin=origin)
    if not models:
        raise CheckpointError(f"{folder} has no fold_N/checkpoint_final.pth"
                              + (f" for folds {list(folds)}" if folds is not None else ""))
    return models


def segmentation_heads(dataset: dict) -> int:
    """The network's outputs for dataset.json's labels, as nnU-Net's LabelManager counts them:
    one per label ("ignore" excepted), or one per foreground region where labels are regions."""
    labels = {k: v for k, v in dataset["labels"].items() if k != "ignore"}
    if any(isinstance(v, list | tuple) and len(v) > 1 for v in labels.values()):
        return sum(1 for v in labels.values() if v not in (0, [0], (0,)))
    return len(labels)


def module_channels(dataset: dict) -> int:
    return len(dataset.get("channel_names", dataset.get("modality", {})))
