"""load_torch / to_torch_state_dict: torch state_dict <-> Flax NNX model, for every arch."""

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from unet_jax import registry
from unet_jax.convert import model_folders, recognize, smp_hub
from unet_jax.convert.backbones import load_backbone
from unet_jax.convert.engine import ConversionError, load_into
from unet_jax.convert.export import to_torch_state_dict
from unet_jax.convert.io import CheckpointError, read_state_dict
from unet_jax.models import recorded
from unet_jax.models.build import build

__all__ = ["CheckpointError", "ConversionError", "NotPortedError", "create_model", "infer_arch",
           "load_nnunet", "load_torch",
           "load_torch_with_report", "to_torch_state_dict"]


class NotPortedError(ConversionError):
    """A checkpoint that fits no ported arch; the message says what the file looks like
    (project and network, when recognisable) and what to do."""

    def __init__(self, message: str):
        self.missing, self.unexpected, self.mismatched = [], [], []
        ValueError.__init__(self, message)


def _not_ported(label: str, known: recognize.Recognized) -> NotPortedError:
    ported = ", ".join(registry.list_models())
    if known.family.project == "torchvision":
        todo = ("a classifier, not a segmentation model: ImageNet weights initialise the "
                "encoder of resnet50_unet / vgg16_unet (`unet-jax train --backbone-weights FILE`, "
                "or `create_model(..., backbone_weights=FILE)`)")
    elif known.family.ported:
        todo = (f"{known.family.ported} is ported with resnet18 / resnet34 / resnet50 encoders "
                "only; other encoders are not supported yet")
    else:
        todo = "this network is not ported"
    return NotPortedError(f"{label} looks like {known.describe()}: {todo}. Ported archs "
                          f"(`unet-jax list`): {ported}")


def infer_arch(shapes: registry.KeyShapes, *, prefix: str = "", label: str = "the checkpoint"):
    """(arch, config) read off a checkpoint's key names and shapes. `prefix` is what the
    reader removed from every key (to name keys as stored); `label` names the source."""
    stored = {prefix + k: v for k, v in shapes.items()}
    known = recognize.recognize(stored)
    if known is not None and not known.ported:
        raise _not_ported(label, known)
    found = [(arch, cfg) for arch in registry.all_archs() if (cfg := arch.infer(shapes))]
    if len(found) == 1:
        return found[0]
    keys = ", ".join(list(stored)[:6]) + (", ..." if len(stored) > 6 else "")
    if found:
        raise NotPortedError(f"{label} (keys {keys}) fits {' and '.join(a.name for a, _ in found)}: "
                             "pass arch= (or --arch) to choose")
    raise NotPortedError(
        f"{label} fits none of the ported archs (keys as stored: {keys}); it is not a network "
        "unet-jax recognises. Is it only part of a model (e.g. an encoder), or a U-Net of "
        "another project? Passing arch= (or --arch) lists every key that differs from that "
        f"arch. Ported archs (`unet-jax list`): {', '.join(registry.list_models())}")


def _config_for(arch_name: str | None, checkpoint, overrides: dict):
    """(arch, config): stated beside the weights (smp's config.json), or `arch_name` with
    the options read off the shapes, or both inferred; `overrides` win."""
    shapes = {k: tuple(v.shape) for k, v in checkpoint.tensors.items()}
    stated = checkpoint.config
    if stated is not None:
        if arch_name not in (None, stated[0]):
            raise CheckpointError(f"the checkpoint's config.json describes a {stated[0]} model, "
                                  f"not {arch_name}")
        arch = registry.get_arch(stated[0])
        config = registry.make_config(arch.name, **stated[1])
    elif arch_name is None:
        arch, config = infer_arch(shapes, prefix=checkpoint.prefix, label=checkpoint.label)
    elif not registry.get_arch(arch_name).listed:  # imported: the graph comes with the options
        arch = registry.get_arch(arch_name)
        return arch, registry.make_config(arch.name, **overrides)
    else:
        arch = registry.get_arch(arch_name)
        known = recognize.recognize({checkpoint.prefix + k: v for k, v in shapes.items()})
        if known is not None and not known.ported:
            raise _not_ported(checkpoint.label, known)
        config = arch.infer(shapes) or registry.make_config(arch.name)
    upstream = {arch.uniform.get(k, k): v for k, v in overrides.items()}
    unknown = set(upstream) - set(arch.options)
    if unknown:
        raise TypeError(f"{arch.name} has no option {', '.join(sorted(unknown))}; "
                        f"options: {', '.join(arch.options)}")
    return arch, dataclasses.replace(config, **upstream)


def load_torch_with_report(source: str | os.PathLike | Mapping, arch: str | None = None, *,
                           strict: bool = True, dtype=None, **config):
    """`load_torch`, also returning the report {"mapped", "ignored", "defaulted", "skipped",
    "notes", "extras"} and the state_dict as read (numpy arrays), for callers that compare
    against torch. "ignored" lists every entry of the file that is not a weight, with why."""
    if dtype is not None and np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs jax.config.update('jax_enable_x64', True) first")
    folder = not isinstance(source, Mapping) and smp_hub.is_folder(Path(source))
    if not isinstance(source, Mapping) and model_folders.is_nnunet_folder(Path(source)):
        raise CheckpointError(f"{source} is an nnU-Net model folder: unet_jax.load_nnunet(folder) "
                              "gives one model per fold (`unet-jax convert FOLDER OUT` saves them)")
    if folder and model_folders.smp_needs_import(Path(source)):
        if arch not in (None, "imported") or config:
            raise CheckpointError(f"{source} is an smp folder of a network that is imported, "
                                  "not ported: pass no arch or options")
        model = model_folders.import_smp_folder(Path(source))
        state = smp_hub.read_safetensors(Path(source) / smp_hub.WEIGHTS).tensors
        report = {"mapped": list(state), "ignored": [], "defaulted": [], "skipped": [], "extras": {},
                  "notes": [f"built by segmentation_models_pytorch from {Path(source) / smp_hub.CONFIG} "
                            "and imported through torch.export"]}
        return model, report, state
    checkpoint = smp_hub.read_folder(Path(source)) if folder else read_state_dict(source)
    if arch is not None and not registry.get_arch(arch).listed and checkpoint.prefix:
        # an imported net's keys are its module's own: a "model." prefix is part of them
        checkpoint.tensors = {checkpoint.prefix + k: v for k, v in checkpoint.tensors.items()}
        checkpoint.notes = [n for n in checkpoint.notes if not n.startswith("prefix ")]
        checkpoint.prefix = ""
    state, label = checkpoint.tensors, checkpoint.label
    spec, cfg = _config_for(arch, checkpoint, config)
    try:
        model, report = load_into(lambda: build(cfg), spec.key_map(cfg), state,
                                  target=f"{spec.name} {cfg}", source=label, strict=strict,
                                  dtype=dtype)
    except ConversionError as e:
        if arch is not None:
            shapes = {k: tuple(v.shape) for k, v in state.items()}
            other = [a.name for a in registry.all_archs() if a.name != arch and a.infer(shapes)]
            if other:
                raise ConversionError(f"{spec.name} (its keys look like a {other[0]} checkpoint)",
                                      label, e.missing, e.unexpected, e.mismatched) from None
        raise
    model.eval()
    values = checkpoint.extras.get("mask_values")
    if isinstance(values, list | tuple) and len(values) == registry.uniform_option(cfg, "num_classes"):
        recorded.record_mask_values(model, values)  # milesial: predict maps classes back
        checkpoint.notes.append(f"mask_values {list(values)[:8]} kept: predictions map classes to them")
    report["ignored"] = checkpoint.ignored + report["ignored"]
    report.update(notes=checkpoint.notes, extras=checkpoint.extras)
    return model, report, state


def load_torch(source: str | os.PathLike | Mapping, arch: str | None = None, *,
               strict: bool = True, dtype=None, **config) -> nnx.Module:
    """A model with the weights of a torch checkpoint, in eval mode.

    `source` is a path (torch zip or legacy files, whole-model pickles read without running
    their code, .safetensors; sniffed by content) or a mapping of tensors/arrays. Wrappers
    (`model_state`, `state_dict`, `model`, ...) and prefixes (`module.`, `model.`,
    `_orig_mod.`, ...) are removed; non-tensor entries are ignored. Without
    `arch`, the arch and its config are read off the keys and shapes; `config` overrides
    options (upstream names or `num_classes`/`in_channels`). Strict by default: one error
    lists every missing, unexpected and mis-shaped key. `dtype` casts floating parameters.
    """
    return load_torch_with_report(source, arch, strict=strict, dtype=dtype, **config)[0]


def load_nnunet(folder: str | os.PathLike, folds=None) -> dict[str, nnx.Module]:
    """{"fold_N": model} of an nnU-Net trained-model folder (plans.json, dataset.json,
    fold_N/checkpoint_final.pth), each an imported network in eval mode recording its
    configuration, `inference_allowed_mirroring_axes` and the plans. Needs torch and
    dynamic-network-architectures."""
    folder = Path(folder)
    if not model_folders.is_nnunet_folder(folder):
        raise CheckpointError(f"{folder} is not an nnU-Net model folder (plans.json, dataset.json "
                              "and fold_N/checkpoint_final.pth)")
    return model_folders.import_nnunet_folder(folder, folds)


def create_model(name: str, *, seed: int = 0, backbone_weights=None, **kwargs) -> nnx.Module:
    """A freshly initialised model, in training mode like a new torch module.

    `kwargs` are the upstream constructor arguments, or the uniform `num_classes` /
    `in_channels`. `backbone_weights`: a torchvision ImageNet file for the encoder of an
    arch with a pretrained backbone (vgg16_unet, resnet50_unet, smp_unet,
    smp_unetplusplus; see `unet_jax.convert.backbones.load_backbone`).
    """
    model = build(registry.make_config(name, **kwargs), seed=seed)
    if backbone_weights is not None:
        load_backbone(model, backbone_weights)
    return model
