"""The stored form of an imported network: the ATen graph `torch.export` traced, as versioned
JSON data that needs neither torch nor the package that defined the module.

    {"format": 2, "source": "segmentation_models_pytorch...Unet",
     "input": {"name": "x", "dims": [[2, null], 3, [17, null], [17, null]]},
     "state": [{"name": "encoder.conv1.weight", "kind": "param", "shape": [...], "dtype": "float32",
                "layout": "kernel"}],
     "placeholders": {"p_encoder_conv1_weight": "encoder.conv1.weight", ...},
     "nodes": [{"name": "conv2d", "op": "aten.conv2d.default", "args": [{"$": "x"}, ...],
                "kwargs": {}, "module": "encoder.conv1", "attrs": {}}, ...],
     "output": {"$": "conv2d_46"}}

An argument is JSON, with `{"$": name}` for another node's value and `{"dtype": name}` for
a torch dtype. `input.dims` gives per torch dimension an exact size or [min, max] (null: no
upper bound). `kind` is "param" (nn.Parameter), "buffer" (a persistent buffer: in the
state_dict) or "constant" (non-persistent buffers and tensor constants the forward uses; not
in the state_dict, so their values travel in the graph: `data`, base64 of the C-order bytes).
A tensor the module holds under several names (one module registered in two places) is one
entry, its other names in `aliases`. `layout` says how a parameter is held in the model
(absent: "torch", torch's own layout): "kernel" for a weight only convolutions use, held
(*k, I/g, O), and "kernel_t" for one only transposed convolutions use, held (*k, I, O/g), so
no call transposes it. `shape` is torch's.
Format 1 (before layouts) still reads.
"""

import base64
import dataclasses
import functools
import json
from typing import Any

import numpy as np

FORMAT = 2
READABLE = (1, 2)
KINDS = ("param", "buffer", "constant")
# torch's axis held at each model axis, per layout and rank
LAYOUTS = {"torch": lambda r: tuple(range(r)),
           "kernel": lambda r: (*range(2, r), 1, 0),
           "kernel_t": lambda r: (*range(2, r), 0, 1)}


@dataclasses.dataclass(frozen=True)
class StateEntry:
    name: str  # the state_dict name (constants: the name the export gave them)
    kind: str
    shape: tuple[int, ...]
    dtype: str
    data: str | None = None  # a constant's value (encode_array)
    layout: str = "torch"
    aliases: tuple[str, ...] = ()  # further state_dict names of the same tensor

    @property
    def permutation(self) -> tuple[int, ...]:
        """The torch axis held at each axis of the model's array."""
        return LAYOUTS[self.layout](len(self.shape))

    @property
    def held_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.permutation)

    def value(self) -> np.ndarray | None:
        if self.data is None:
            return None
        raw = np.frombuffer(base64.b64decode(self.data), np.dtype(self.dtype))
        return raw.reshape(self.shape)


def encode_array(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    op: str  # "aten.conv2d.default", "_operator.add", ...
    args: tuple
    kwargs: dict
    module: str  # the torch module path that called it ("" for the root)
    attrs: dict  # facts of that module the op needs (BatchNorm momentum, buffer names, ...)


class Graph:
    """A parsed graph; identity-compared, so one text parses to one object (`parse` caches),
    and models of equal configs share their compiled programs."""

    def __init__(self, data: dict):
        if data.get("format") not in READABLE:
            raise ValueError(f"imported graph format {data.get('format')!r}; this unet-jax reads "
                             f"formats {READABLE}: import the torch module again with this version")
        self.source: str = data["source"]
        self.input_name: str = data["input"]["name"]
        self.dims: list = data["input"]["dims"]
        self.state = [StateEntry(e["name"], e["kind"], tuple(e["shape"]), e["dtype"], e.get("data"),
                                 e.get("layout", "torch"), tuple(e.get("aliases", ())))
                      for e in data["state"]]
        self.entries = {e.name: e for e in self.state}
        self.placeholders: dict[str, str] = data["placeholders"]
        self.nodes = [Node(n["name"], n["op"], tuple(n["args"]), n["kwargs"], n["module"], n["attrs"])
                      for n in data["nodes"]]
        self.output = data["output"]

    def state_reaching(self, items=None) -> set[str]:
        """The state names the output depends on; with `items`, only those positions of a
        list / tuple output (an in-place op counts as producing its operand too)."""
        spec = self.output
        if items is not None:
            heads = spec.get("list", spec.get("tuple"))
            if heads is None:
                raise ValueError("this network returns one output, not a list of heads")
            spec = {"list": [s for i, s in enumerate(heads) if i in set(items)]}
        producers: dict[str, list[Node]] = {}
        for node in self.nodes:
            producers.setdefault(node.name, []).append(node)
            if node.op.rsplit(".", 1)[0].endswith("_") and node.args and isinstance(node.args[0], dict):
                producers.setdefault(node.args[0].get("$"), []).append(node)
        seen, pending = set(), _names(spec)
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            for node in producers.get(name, ()):
                pending |= _names(list(node.args)) | _names(node.kwargs)
        return {self.placeholders[n] for n in seen if n in self.placeholders}

    @property
    def rank(self) -> int:
        return len(self.dims)

    def check_input(self, shape: tuple[int, ...]) -> None:
        """ValueError naming the sizes the network takes, for a channels-last input `shape`."""
        if len(shape) != self.rank:
            raise ValueError(f"this imported network takes {self.rank}-D input (N, "
                             f"{'D, ' if self.rank == 5 else ''}H, W, C channels-last), "
                             f"got shape {tuple(shape)}")
        torch_shape = (shape[0], shape[-1], *shape[1:-1])
        names = ["batch", "channels"] + ["depth", "height", "width"][5 - self.rank:]
        for name, n, rule in zip(names, torch_shape, self.dims, strict=True):
            if isinstance(rule, int):
                ok, takes = n == rule, f"exactly {rule}"
            else:
                lo, hi = rule
                ok, takes = n >= lo and (hi is None or n <= hi), (
                    f">= {lo}" if hi is None else f"{lo}..{hi}")
            if not ok:
                raise ValueError(f"input {name} {n} does not fit this imported network "
                                 f"({self.source}): it takes {name} {takes}")


def _names(arg) -> set[str]:
    """The node names an argument (or output spec) refers to."""
    if isinstance(arg, dict):
        if "$" in arg:
            return {arg["$"]}
        return set().union(*(_names(v) for v in arg.values())) if arg else set()
    if isinstance(arg, list | tuple):
        return set().union(*(_names(v) for v in arg)) if arg else set()
    return set()


@functools.lru_cache(maxsize=32)
def parse(text: str) -> Graph:
    return Graph(json.loads(text))


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)
