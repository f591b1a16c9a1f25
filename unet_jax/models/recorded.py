"""What a model records beside its weights, as attributes: its preprocessing preset
(`unet_jax.presets`), the input size it was trained at, and the mask value of each class
(milesial's `mask_values`). Saved with the model; predict reads them."""

from unet_jax import presets, registry


def record(model, name: str, size=None):
    """Mark `model` as expecting preset `name` (and, if given, input size (h, w): a trained
    model's training size, where predict letterboxes / resizes); returns the model."""
    model.preprocess = presets.get(name).name
    if size:
        model.input_size = tuple(int(n) for n in size)
    return model


def preset_of(model) -> str:
    """The preset `model` records, else its arch's upstream default."""
    return getattr(model, "preprocess", None) or registry.arch_of_config(model.config).preprocess


def input_size_of(model) -> tuple[int, int] | None:
    return getattr(model, "input_size", None)


def record_mask_values(model, values) -> None:
    """Record the mask pixel value of each class (milesial checkpoints' `mask_values`)."""
    model.mask_values = list(values) if values is not None else None


def mask_values(model) -> list | None:
    return getattr(model, "mask_values", None)


def carry_over(source, target):
    """`target` recording what `source` records; returns `target`."""
    record_mask_values(target, mask_values(source))
    return record(target, preset_of(source), input_size_of(source))
