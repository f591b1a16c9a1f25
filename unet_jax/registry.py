"""The model registry: arch name -> model class, config, key map, config inference and the
facts each arch declares (sizes, preprocessing, backbone, training defaults). A leaf: arch
modules register themselves here; building lives in `unet_jax.models.build`."""

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

KeyShapes = Mapping[str, tuple[int, ...]]  # a checkpoint's {key: shape}


@dataclasses.dataclass(frozen=True)
class SizeRule:
    """The input sizes an arch takes, per axis: `minimum + k * step` (k >= 0); its output is
    `shrink` smaller (unpadded convolutions)."""

    step: int = 16
    minimum: int = 16
    shrink: int = 0

    def valid(self, n: int) -> bool:
        return n >= self.minimum and (n - self.minimum) % self.step == 0

    def at_least(self, n: int) -> int:
        """The smallest valid input >= n."""
        return self.minimum + self.step * max(0, -(-(n - self.minimum) // self.step))

    def nearest(self, n: int) -> int:
        """The valid input nearest n."""
        return self.minimum + self.step * max(0, round((n - self.minimum) / self.step))

    def input_for(self, out: int) -> int:
        """The smallest valid input whose output covers `out` pixels."""
        return self.at_least(out + self.shrink)

    def describe(self) -> str:
        sizes = (f"any size >= {self.minimum}" if self.step == 1
                 else f"multiples of {self.step}" if self.minimum == self.step
                 else f"{self.minimum} + {self.step}k")
        return sizes + (f"; the output is {self.shrink} smaller" if self.shrink else "")


@dataclasses.dataclass(frozen=True)
class Backbone:
    """An arch's encoder that torchvision ImageNet weights initialise (and that
    `freeze_backbone_epochs` freezes, as upstream's `freeze_backbone()`)."""

    attribute: str  # the model attribute holding it
    network: Callable[[Any], str]  # config -> the torchvision network: "vgg16", "resnet50", ...
    module: Callable[[Any, nnx.Rngs], nnx.Module]  # config -> a fresh encoder
    key_map: Callable[[Any], list]  # config -> rules from torchvision's keys to the encoder


@dataclasses.dataclass(frozen=True)
class Arch:
    """Everything the library knows about one architecture."""

    name: str
    model: Callable[..., nnx.Module]  # model(**asdict(config), rngs=...)
    config: type  # frozen dataclass of the upstream constructor arguments
    key_map: Callable[[Any], list]  # config -> rules (unet_jax.models.keymap.Rule)
    infer: Callable[[KeyShapes], Any]  # checkpoint shapes -> config, or None if not this arch
    uniform: Mapping[str, str]  # {"num_classes": upstream name, "in_channels": upstream name}
    source: str  # one line: upstream repository and class
    # TrainConfig values for this arch where the general TRAIN_DEFAULTS do not learn
    train_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sizes: SizeRule = SizeRule()  # the input sizes it takes
    preprocess: str = "unit"  # the upstream's preprocessing preset (unet_jax.presets)
    backbone: "Backbone | None" = None  # the pretrained encoder ImageNet weights fill, if any
    listed: bool = True  # False: built from a torch module (import_torch), not by name

    @property
    def defaults(self) -> dict[str, Any]:
        """The constructor's defaults, which are the upstream constructor's."""
        cls = self.model.func if isinstance(self.model, functools.partial) else self.model
        params = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in params
                if p.default is not p.empty and p.name in self.options}

    @property
    def options(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config)]


# Training options that depend on the arch: these, unless its `train_defaults` say otherwise.
TRAIN_DEFAULTS = {"image_size": 64, "lr": 1e-3, "warmup_epochs": 0.0, "loss": "ce", "batch_size": 16}
# For archs without BatchNorm (labml_unet, vgg16_unet): with cross-entropy alone they predict
# only the background class for the first epochs, and at batch 16 a 4-epoch run ends before
# they leave it (docs/train.md); dice rewards the rare classes and batch 4 gives 4x the steps.
NO_BATCHNORM_TRAINING = {"loss": "ce+dice", "warmup_epochs": 0.5, "batch_size": 4}

_ARCHS: dict[str, Arch] = {}


def train_defaults(name: str) -> dict[str, Any]:
    """The arch-dependent TrainConfig defaults of arch `name`."""
    return {**TRAIN_DEFAULTS, **get_arch(name).train_defaults}


def register(arch: Arch) -> Arch:
    _ARCHS[arch.name] = arch
    return arch


def get_arch(name: str) -> Arch:
    if name not in _ARCHS:
        raise ValueError(f"unknown arch {name!r}; known archs: {', '.join(list_models())}")
    return _ARCHS[name]


def all_archs() -> list[Arch]:
    return [_ARCHS[n] for n in list_models()]


def list_models() -> list[str]:
    """The names of the archs built by name (not `imported`), sorted."""
    return sorted(name for name, arch in _ARCHS.items() if arch.listed)


def make_config(name: str, **kwargs):
    """The config of arch `name` from upstream-named and uniform keyword arguments."""
    arch = get_arch(name)
    fields = set(arch.options)
    values = dict(arch.defaults)
    for key, value in kwargs.items():
        upstream = arch.uniform.get(key, key)
        if upstream not in fields:
            raise TypeError(f"{name} has no option {key!r}; options: {', '.join(sorted(fields))}"
                            f" (and {', '.join(sorted(arch.uniform))})")
        values[upstream] = value
    return arch.config(**values)


def arch_of_config(config) -> Arch:
    for arch in _ARCHS.values():
        if type(config) is arch.config:
            return arch
    raise TypeError(f"{type(config).__name__} is not the config of a registered arch")


def uniform_option(model_or_config, name: str):
    """The value of uniform option `name` ("num_classes" / "in_channels") of a model or config."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, arch_of_config(config).uniform[name])
