"""ImportedNet: a torch network's exported ATen graph run in JAX, its parameters and
buffers held under their state_dict names (torch's layout, convolution weights with their
spatial axes first), channels-last in and out."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unet_jax.models.imported import aten, graph
from unet_jax.models.imported.layout import Kernel, T, channels_last


@dataclasses.dataclass(frozen=True)
class ImportedConfig:
    """`graph`: the JSON text of `unet_jax.models.imported.graph`; the class and input
    channel counts read off the export (the largest image-shaped output's channels);
    `origin`: JSON text of where the network came from (an smp config, an nnU-Net
    configuration with its plans and mirroring axes), "{}" for a module."""

    graph: str
    num_classes: int
    in_channels: int
    origin: str = "{}"

    def __repr__(self) -> str:  # the graph is long: name the network instead
        return (f"ImportedConfig({graph.parse(self.graph).source}, num_classes={self.num_classes}, "
                f"in_channels={self.in_channels})")


class Constant(nnx.Variable):
    """A non-persistent buffer or tensor constant of the torch module: neither trained nor
    in its state_dict."""


class DropoutKey(nnx.Variable):
    """The raw key dropout draws from, advanced on every training call."""


class Module(nnx.Module):
    """One torch submodule: its parameters, buffers and children under their torch names
    (a name that an nnx.Module attribute already has gets a trailing '_')."""


def attribute(name: str) -> str:
    return name + "_" if hasattr(nnx.Module, name) or name.startswith("_") else name


def flax_path(state_name: str) -> str:
    """The model path of a state_dict entry."""
    return ".".join(["torch", *map(attribute, state_name.split("."))])


def _variable(kind: str):
    return {"param": nnx.Param, "buffer": nnx.BatchStat, "constant": Constant}[kind]


def _dtype(name: str):
    return aten.dtype_of(name)


class _Run:
    """The context of one call: the mode, the state, the node being run."""

    def __init__(self, net: "ImportedNet", training: bool):
        self.net, self.training, self.node = net, training, None

    def read(self, name: str) -> jax.Array:
        return self.net.variable(name)[...]

    def write(self, name: str, value) -> None:
        self.net.variable(name)[...] = value

    def dropout_key(self):
        key, sub = jax.random.split(self.net.dropout_key[...])
        self.net.dropout_key[...] = key
        return sub

    def require_unused(self, index: int, what: str) -> None:
        if (self.node.name, index) in self.net.getitems:
            raise NotImplementedError(f"{what} is not supported")


class ImportedNet(nnx.Module):
    """The network of `graph` (JSON text, `unet_jax.models.imported.graph`), as built by
    `unet_jax.import_torch`. Takes (N, H, W, C) or (N, D, H, W, C) and returns the torch
    module's output structure with every image-shaped tensor channels-last."""

    def __init__(self, graph: str, num_classes: int, in_channels: int, origin: str = "{}", *,
                 rngs: nnx.Rngs):
        self.config = ImportedConfig(graph, num_classes, in_channels, origin)
        parsed = self.parsed
        self.torch = Module()
        for entry in parsed.state:
            parts = [attribute(p) for p in entry.name.split(".")]
            node = self.torch
            for part in parts[:-1]:
                if not hasattr(node, part):
                    setattr(node, part, Module())
                node = getattr(node, part)
            stored = entry.value()
            value = (jnp.zeros(entry.held_shape, _dtype(entry.dtype)) if stored is None
                     else jnp.asarray(stored, _dtype(entry.dtype)))
            setattr(node, parts[-1], _variable(entry.kind)(value))
        self.dropout_key = DropoutKey(jax.random.key_data(rngs.params()))
        self.use_running_average = False
        self.deterministic = False
        self.getitems = tuple((n.args[0]["$"], n.args[1]) for n in parsed.nodes
                              if n.op == "_operator.getitem" and isinstance(n.args[0], dict))

    @property
    def parsed(self) -> graph.Graph:
        return graph.parse(self.config.graph)

    def variable(self, name: str) -> nnx.Variable:
        node = self.torch
        for part in name.split("."):
            node = getattr(node, attribute(part))
        return node

    def __call__(self, x: jax.Array):
        g = self.parsed
        g.check_input(x.shape)
        run = _Run(self, training=not self.use_running_average)
        env: dict = {g.input_name: channels_last(x)}
        for placeholder, name in g.placeholders.items():
            entry = g.entries[name]
            held = self.variable(name)[...]
            env[placeholder] = T(held) if entry.layout == "torch" else Kernel(held, entry.permutation)
        for node in g.nodes:
            run.node = node
            args = [_decode(a, env) for a in node.args]
            kwargs = {k: _decode(v, env) for k, v in node.kwargs.items()}
            fn = aten.OPS.get(node.op)
            try:
                value = fn(run, *args, **kwargs) if fn else aten.SHAPE_OPS[node.op](*args, **kwargs)
            except (TypeError, ValueError) as e:
                where = f" in {node.module}" if node.module else ""
                raise ValueError(f"input of shape {tuple(x.shape)} does not fit this imported "
                                 f"network ({g.source}): {node.op}{where} failed ({e}). Sizes "
                                 f"the export allows: {_dims_text(g.dims)}; the network may "
                                 "constrain them further (e.g. multiples of its total stride)") from e
            env[node.name] = value
            if node.op.rsplit(".", 1)[0].endswith("_") and node.args and isinstance(node.args[0], dict):
                env[node.args[0]["$"]] = value  # an in-place op: the operand now holds the result
        return _output(g.output, env, g.rank)


def _decode(arg, env):
    if isinstance(arg, dict):
        if "$" in arg:
            return env[arg["$"]]
        if "dtype" in arg:
            return _dtype(arg["dtype"])
        return {k: _decode(v, env) for k, v in arg.items()}
    if isinstance(arg, list):
        return [_decode(a, env) for a in arg]
    return arg


def _output(spec, env, rank: int):
    """The module's output structure; tensors of the input's rank channels-last."""
    if isinstance(spec, dict) and "$" in spec:
        value = env[spec["$"]]
        if not isinstance(value, T):
            return value
        return value.last() if value.rank == rank else value.torch()
    if isinstance(spec, dict) and "tuple" in spec:
        return tuple(_output(s, env, rank) for s in spec["tuple"])
    if isinstance(spec, dict) and "list" in spec:
        return [_output(s, env, rank) for s in spec["list"]]
    if isinstance(spec, dict) and "dict" in spec:
        return {k: _output(s, env, rank) for k, s in spec["dict"]}
    return spec.get("value") if isinstance(spec, dict) else spec


def _dims_text(dims) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else f"{d[0]}.." + ("" if d[1] is None else str(d[1]))
                           for d in dims) + ") in torch's order"


def main_output_channels(output_shapes: list[tuple[int, ...]]) -> int:
    """The class count of a network from its outputs' torch shapes: the channels of the
    largest image-shaped output."""
    images = [s for s in output_shapes if len(s) >= 3]
    return max(images, key=lambda s: int(np.prod(s[2:])))[1] if images else output_shapes[0][-1]
