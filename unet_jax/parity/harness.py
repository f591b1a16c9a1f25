"""Build a torch reference and the JAX model from the same weights and compare them.

Outputs are compared as `max|jax - torch| / max(1, max|torch|)`. The per-layer comparison pairs
every torch Conv2d / ConvTranspose2d / BatchNorm2d with its Flax twin through the arch's
key map and lists their output differences in execution order, so the first layer that
diverges is where a conversion went wrong.
"""

import dataclasses
import math

import jax
import numpy as np
import torch
from flax import nnx

from unet_jax import registry
from unet_jax.convert.engine import _dotted
from unet_jax.nn import BatchNorm, Conv2d, ConvTranspose2d
from unet_jax.parity.references import REFERENCES

# Stated tolerances on max|diff| / max(1, max|reference|) (see docs/parity.md).
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


@dataclasses.dataclass(frozen=True)
class Diff:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    argmax_agreement: float | None = None  # % of pixels whose predicted class agrees


def reference_for(config) -> torch.nn.Module:
    """The torch reference of `config`'s arch, with torch's default random init."""
    return REFERENCES[registry.arch_of_config(config).name](config)


def randomize_batchnorm(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-default BatchNorm statistics and affine parameters (a swapped mean/var shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=g)))


def randomize_weights(module: torch.nn.Module, seed: int = 0, *, moderate: bool = False) -> None:
    """Every weight far from torch's default init, so a mixed-up tensor, a dropped term or a
    computation in too low a precision shows beyond the fp64 tolerance: conv and transposed
    conv weights He-scaled (std sqrt(2 / fan_in)), their biases ~ N(0, 0.5^2); BatchNorm
    weights ~ N(0, 1) (signed), biases ~ N(0, 0.5^2), running means ~ N(0, 1), running
    variances ~ U(0.2, 2.2). `moderate` BatchNorms (weights of random sign and magnitude
    U(0.5, 1.5), means ~ N(0, 0.5^2), variances ~ U(0.5, 2)) keep deep nets well enough
    conditioned for float32 comparisons too: with the wide ranges torch's own float32 output
    strays from its float64 one by ~1e-4 on deep ResNets."""
    g = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * std)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (high - low) + low)

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.conv._ConvNd):  # 1-D, 2-D, 3-D, transposed, grouped
                taps = m.weight.shape[2:].numel()
                fan_in = (m.weight.shape[0] * taps / math.prod(m.stride)
                          if m.transposed else m.weight.shape[1] * taps)
                normal(m.weight, (2 / max(1.0, fan_in)) ** 0.5)
                if m.bias is not None:
                    normal(m.bias, 0.5)
            elif isinstance(m, torch.nn.modules.batchnorm._NormBase):  # BatchNorm, InstanceNorm
                if m.affine:
                    if moderate:
                        uniform(m.weight, 0.5, 1.5)
                        m.weight.mul_(torch.randint(0, 2, m.weight.shape, generator=g) * 2 - 1)
                    else:
                        normal(m.weight, 1.0)
                    normal(m.bias, 0.5)
                if m.track_running_stats:
                    normal(m.running_mean, 0.5 if moderate else 1.0)
                    uniform(m.running_var, *((0.5, 2.0) if moderate else (0.2, 2.2)))
                    m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=g)))
            elif isinstance(m, torch.nn.GroupNorm | torch.nn.LayerNorm) and m.weight is not None:
                uniform(m.weight, 0.5, 1.5) if moderate else normal(m.weight, 1.0)
                if m.bias is not None:
                    normal(m.bias, 0.5)


def random_reference(config, seed: int = 0) -> torch.nn.Module:
    """A torch reference in eval mode with random weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    module = reference_for(config)
    randomize_batchnorm(module, seed)
    return module.eval()


def _as_list(y) -> list:
    return list(y) if isinstance(y, (list, tuple)) else [y]


def torch_forward(module: torch.nn.Module, x_nhwc: np.ndarray) -> list[np.ndarray]:
    """The reference's outputs (a list, one entry per head) as NHWC arrays."""
    dtype = torch.float64 if x_nhwc.dtype == np.float64 else torch.float32
    module = module.to(dtype)
    with torch.no_grad():
        ys = _as_list(module(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()).to(dtype)))
    return [y.numpy().transpose(0, 2, 3, 1) for y in ys]


def jax_forward(model: nnx.Module, x_nhwc: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(y) for y in _as_list(model(jax.numpy.asarray(x_nhwc)))]


def diff(name: str, ref: np.ndarray, got: np.ndarray, *, argmax: bool = False) -> Diff:
    if ref.shape != got.shape:
        raise AssertionError(f"{name}: torch shape {ref.shape} != jax shape {got.shape}")
    err = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    max_abs = float(err.max()) if err.size else 0.0
    if np.isnan(max_abs):  # a NaN anywhere is an infinite difference, never a pass
        max_abs = float("inf")
    scale = max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
    agree = float((ref.argmax(-1) == got.argmax(-1)).mean() * 100) if argmax else None
    return Diff(name, ref.shape, max_abs, max_abs / scale, agree)


def compare_outputs(ref: list[np.ndarray], got: list[np.ndarray]) -> list[Diff]:
    """One `Diff` per output (four with deep supervision)."""
    if len(ref) != len(got):
        raise AssertionError(f"torch returned {len(ref)} outputs, jax {len(got)}")
    return [diff(f"output[{i}]" if len(ref) > 1 else "output", r, g, argmax=r.shape[-1] > 1)
            for i, (r, g) in enumerate(zip(ref, got))]


def compare(module: torch.nn.Module, model: nnx.Module, x_nhwc: np.ndarray
            ) -> tuple[list[Diff], list[Diff]]:
    """(output diffs, layer diffs) from one forward pass of each model. Layer diffs cover
    every conv / transposed conv / BatchNorm in torch's execution order, named by torch
    module name."""
    # JAX first: it names the valid input sizes where torch only fails in `cat`.
    y, captured = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(
        jax.numpy.asarray(x_nhwc))
    torch_layers: dict[str, np.ndarray] = {}
    hooks = []
    for name, m in module.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.BatchNorm2d)):
            def hook(_m, _inp, out, name=name):  # clone now: an inplace ReLU may follow
                # the first call, as JAX's capture (R2U-Nets apply one conv t+1 times)
                if name not in torch_layers:
                    torch_layers[name] = out.detach().clone().numpy().transpose(0, 2, 3, 1)
            hooks.append(m.register_forward_hook(hook))
    try:
        ref = torch_forward(module, x_nhwc)
    finally:
        for h in hooks:
            h.remove()

    rules = registry.arch_of_config(model.config).key_map(model.config)
    flax_name_of = {}
    for path, m in nnx.iter_modules(model):
        if isinstance(m, (Conv2d, ConvTranspose2d, BatchNorm)):
            leaf = f"{_dotted(path)}.{'scale' if isinstance(m, BatchNorm) else 'kernel'}"
            key = next(t for r in rules if (t := r.match_flax(leaf)) is not None)
            flax_name_of[key.rsplit(".", 1)[0]] = _dotted(path)
    wanted = set(flax_name_of.values())
    jax_layers = {_dotted(path[:-1]): np.asarray(_first(v.get_value()))
                  for path, v in captured.flat_state()
                  if path[-1] == "__call__" and _dotted(path[:-1]) in wanted}
    layers = [diff(name, out, jax_layers[flax_name_of[name]])
              for name, out in torch_layers.items() if flax_name_of.get(name) in jax_layers]
    return compare_outputs(ref, [np.asarray(a) for a in _as_list(y)]), layers


def _first(value):
    """The first recorded output (`sow` keeps a tuple of calls)."""
    return value[0] if isinstance(value, tuple) else value


def default_size(arch: str) -> tuple[int, int]:
    """The valid input nearest 256x256 for `arch`."""
    n = registry.get_arch(arch).sizes.nearest(256)
    return n, n


@dataclasses.dataclass
class ParityReport:
    """Outputs and per-layer differences of one checkpoint, torch vs JAX."""

    arch: str
    size: tuple[int, int]
    batch: int
    dtype: str
    outputs: list[Diff]
    layers: list[Diff]

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.dtype]

    @property
    def ok(self) -> bool:
        return all(d.max_rel <= self.tolerance for d in self.outputs)

    @property
    def first_bad_layer(self) -> Diff | None:
        return next((d for d in self.layers if d.max_rel > self.tolerance), None)

    def to_dict(self) -> dict:
        return {"arch": self.arch, "size": list(self.size), "batch": self.batch,
                "dtype": self.dtype, "tolerance": self.tolerance, "ok": self.ok,
                "outputs": [dataclasses.asdict(d) for d in self.outputs],
                "first_bad_layer": self.first_bad_layer and self.first_bad_layer.name,
                "layers": [dataclasses.asdict(d) for d in self.layers]}

    def format(self, all_layers: bool = False) -> str:
        h, w = self.size
        lines = [f"{self.arch}: input {self.batch}x{h}x{w} {self.dtype}, tolerance "
                 f"max|diff|/max(1,max|torch|) <= {self.tolerance:g}",
                 f"{'output':<12} {'shape':<20} {'max abs':>10} {'max rel':>10} {'argmax %':>9}"]
        for d in self.outputs:
            agree = "-" if d.argmax_agreement is None else f"{d.argmax_agreement:.2f}"
            lines.append(f"{d.name:<12} {str(d.shape):<20} {d.max_abs:>10.2e} {d.max_rel:>10.2e} "
                         f"{agree:>9}")
        bad = self.first_bad_layer
        shown = self.layers if all_layers else [d for d in self.layers if d is bad]
        lines.append(f"layers compared: {len(self.layers)}, worst max rel "
                     f"{max((d.max_rel for d in self.layers), default=0.0):.2e}; first beyond "
                     f"tolerance: {bad.name if bad else 'none'}")
        lines += [f"  {d.name:<40} {str(d.shape):<20} {d.max_rel:>10.2e}" for d in shown]
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


def check_state_dict(state_dict: dict[str, np.ndarray], model: nnx.Module,
                     size: tuple[int, int], batch: int = 1, dtype: str = "float32",
                     seed: int = 0) -> ParityReport:
    """Load `state_dict` into the torch reference of `model`'s arch (strict) and compare
    both on a seeded random input."""
    reference = reference_for(model.config)
    reference.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
                              strict=True)
    reference.eval()
    channels = reference_in_channels(model.config)
    x = np.random.default_rng(seed).standard_normal((batch, *size, channels)).astype(dtype)
    arch = registry.arch_of_config(model.config).name
    return ParityReport(arch, size, batch, dtype, *compare(reference, model, x))


def reference_in_channels(config) -> int:
    return registry.uniform_option(config, "in_channels")
