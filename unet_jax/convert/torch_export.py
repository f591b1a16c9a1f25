"""import_torch: any torch module -> an `imported` unet-jax model, through `torch.export`.

The module is exported in eval mode with dynamic batch and spatial sizes; every op of the
graph must be one `unet_jax.models.imported.aten` implements (else one error lists them all,
with the modules that use them, before anything is built); the graph is stored as data in
the model's config and the state_dict loaded through the strict key-map engine."""

import collections
import dataclasses
import warnings

from flax import nnx

from unet_jax.convert.engine import load_into
from unet_jax.convert.io import to_numpy
from unet_jax.models.build import build
from unet_jax.models.imported import ImportedConfig, aten, key_map
from unet_jax.models.imported import graph as graph_format
from unet_jax.models.imported.net import main_output_channels

DROPPED_KWARGS = {"device", "layout", "pin_memory", "memory_format", "non_blocking"}
NORMS = {"aten.batch_norm.default", "aten.instance_norm.default"}


class UnsupportedModuleError(ValueError):
    """A torch module the importer cannot take; the message lists every reason."""


@dataclasses.dataclass
class Captured:
    graph: dict
    state: dict  # state_dict name -> np.ndarray (params and persistent buffers)
    num_classes: int
    in_channels: int
    notes: list


def op_name(target) -> str:
    """The name of a graph node's target: "aten.conv2d.default", "_operator.add", ..."""
    import torch
    if isinstance(target, torch._ops.OpOverload | torch._ops.HigherOrderOperator):
        return str(target) if isinstance(target, torch._ops.OpOverload) else f"higher_order.{target.name()}"
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', target)}"


def _module_of(node) -> tuple[str, str]:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    return path, cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def _encode(arg):
    import torch
    if isinstance(arg, torch.fx.Node):
        return {"$": arg.name}
    if isinstance(arg, list | tuple):
        return [_encode(a) for a in arg]
    if isinstance(arg, torch.dtype):
        return {"dtype": str(arg).removeprefix("torch.")}
    if isinstance(arg, torch.device | torch.layout | torch.memory_format):
        return None
    if arg is None or isinstance(arg, bool | int | float | str):
        return arg
    raise UnsupportedModuleError(f"an argument of type {type(arg).__name__} ({arg!r}) in the graph")


def _dims(ep, placeholder) -> list:
    import torch
    dims = []
    for size in placeholder.meta["val"].shape:
        if isinstance(size, int):
            dims.append(size)
            continue
        expr = size.node.expr if isinstance(size, torch.SymInt) else size
        vr = ep.range_constraints.get(expr)
        lo = int(vr.lower) if vr is not None else 1
        lo = 1 if lo == 2 else lo  # export keeps sizes 0 and 1 out of its symbols; 1 runs the same graph
        upper = str(vr.upper) if vr is not None else ""
        hi = int(upper) if upper.isdigit() else None  # "int_oo": no bound
        dims.append([lo, hi if hi is not None and hi < 2 ** 62 else None])
    return dims


def _export(module, example, notes: list):
    import torch
    from torch.export import Dim
    batch = example if example.shape[0] > 1 else example.expand(2, *example.shape[1:]).contiguous()
    dynamic = {0: Dim.AUTO, **{i: Dim.AUTO for i in range(2, example.ndim)}}
    try:
        return torch.export.export(module, (batch,), dynamic_shapes=(dynamic,), strict=False)
    except Exception as e:  # noqa: BLE001 (export raises many kinds; the static retry reports its own)
        notes.append(f"exported at the example's size only (dynamic sizes failed: "
                     f"{str(e).splitlines()[0][:200]})")
        return torch.export.export(module, (example,), strict=False)


def _output_spec(ep, out_node):
    import torch.utils._pytree as pytree

    class Leaf:
        def __init__(self, value):
            self.value = value

    leaves = [Leaf(_encode(a) if a is not None else None) for a in out_node.args[0]]
    tree = pytree.tree_unflatten(leaves, ep.call_spec.out_spec)

    def describe(t):
        if isinstance(t, Leaf):
            return t.value if isinstance(t.value, dict) else {"value": t.value}
        if isinstance(t, list):
            return {"list": [describe(v) for v in t]}
        if isinstance(t, tuple):
            return {"tuple": [describe(v) for v in t]}
        if isinstance(t, dict):
            return {"dict": [[k, describe(v)] for k, v in t.items()]}
        return {"value": t}
    return describe(tree)


def unsupported_ops(ep) -> dict[str, collections.Counter]:
    """{op: Counter(module path)} of every graph node the importer cannot run."""
    found: dict[str, collections.Counter] = {}
    for node in ep.graph.nodes:
        if node.op in ("call_function", "call_method", "call_module", "get_attr"):
            name = op_name(node.target) if node.op == "call_function" else f"{node.op}:{node.target}"
            if node.op != "call_function" or not aten.supported(name):
                found.setdefault(name, collections.Counter())[_module_of(node)[0] or "(root)"] += 1
    return found


def _refuse(module, found: dict) -> UnsupportedModuleError:
    lines = [f"{type(module).__name__} uses {len(found)} op(s) the importer does not support:"]
    for name, where in sorted(found.items()):
        places = ", ".join(f"{p} x{n}" if n > 1 else p for p, n in where.most_common(6))
        lines.append(f"  {name}: {sum(where.values())} time(s), in {places}"
                     + (", ..." if len(where) > 6 else ""))
    lines.append("Supported ops: unet_jax.models.imported.aten.OPS; replace these ops in the "
                 "module or ask for them")
    return UnsupportedModuleError("\n".join(lines))


def capture(module, example) -> Captured:
    """Export `module` (a torch.nn.Module) at `example` (N, C, ...) and read its graph."""
    import torch
    import torch.utils._pytree as pytree
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"import_torch takes a torch.nn.Module, not {type(module).__name__}")
    if not isinstance(example, torch.Tensor) or example.ndim not in (3, 4, 5):
        raise ValueError("example must be a torch tensor (N, C, H, W), (N, C, D, H, W) or (N, C, L) "
                         f"in torch's layout, got {getattr(example, 'shape', type(example).__name__)}")
    notes: list = []
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            outputs = [t for t in pytree.tree_leaves(module(example)) if isinstance(t, torch.Tensor)]
        ep = _export(module, example, notes)
    finally:
        module.train(training)
    found = unsupported_ops(ep)
    if found:
        raise _refuse(module, found)

    state_dict, entries, placeholders = {}, [], {}
    by_name = {n.name: n for n in ep.graph.nodes}
    user_input = None
    kinds = {"PARAMETER": "param", "BUFFER": "buffer", "CONSTANT_TENSOR": "constant"}
    specs = []
    for spec in ep.graph_signature.input_specs:
        kind = spec.kind.name
        if kind == "USER_INPUT":
            user_input = spec.arg.name
            continue
        if kind not in kinds:
            raise UnsupportedModuleError(f"graph input {spec.arg.name} of kind {kind} is not supported")
        specs.append((spec, kinds[kind] if spec.persistent is not False else "constant"))
    groups = _shared_tensors(module, [s for s, kind in specs if kind != "constant"])
    for spec, entry in specs:
        tensor = ep.state_dict.get(spec.target) if entry != "constant" else ep.constants[spec.target]
        array = to_numpy(tensor)  # a copy: the module may go on training
        group = groups.get(spec.target, [spec])
        placeholders[spec.arg.name] = group[0].target
        if entry != "constant":
            state_dict[spec.target] = array
        if group[0] is not spec:
            continue  # another name of a tensor already listed
        layout = _held_layout([by_name[s.arg.name] for s in group]) if entry != "constant" else "torch"
        entries.append({"name": spec.target, "kind": entry, "shape": list(array.shape),
                        "dtype": str(array.dtype),
                        **({"layout": layout} if layout != "torch" else {}),
                        **({"aliases": [s.target for s in group[1:]]} if len(group) > 1 else {}),
                        **({"data": graph_format.encode_array(array)} if entry == "constant" else {})})
    nodes = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = op_name(node.target)
        path, cls = _module_of(node)
        attrs = {}
        if name in NORMS:
            attrs = _norm_attrs(module, node, path, placeholders, {e["name"] for e in entries})
        nodes.append({"name": node.name, "op": name, "args": _encode(list(node.args)),
                      "kwargs": {k: _encode(v) for k, v in node.kwargs.items() if k not in DROPPED_KWARGS},
                      "module": path, "attrs": attrs})
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    source = f"{type(module).__module__}.{type(module).__qualname__}"
    graph = {"format": graph_format.FORMAT, "source": source,
             "input": {"name": user_input, "dims": _dims(ep, by_name[user_input])},
             "state": entries, "placeholders": placeholders, "nodes": nodes,
             "output": _output_spec(ep, out_node)}
    classes = main_output_channels([tuple(t.shape) for t in outputs]) if outputs else 1
    return Captured(graph, state_dict, classes, example.shape[1], notes)


def _shared_tensors(module, specs: list) -> dict[str, list]:
    """{state_dict name: the specs of every name of its tensor} for tensors the module holds
    under several names, in state_dict order (the first names the entry)."""
    held = module.state_dict(keep_vars=True)
    order = {name: i for i, name in enumerate(held)}
    by_tensor: dict = {}
    for spec in specs:
        t = held.get(spec.target)
        if t is None or t.numel() == 0:
            continue
        identity = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        by_tensor.setdefault(identity, []).append(spec)
    groups = {}
    for group in by_tensor.values():
        if len(group) > 1:
            group = sorted(group, key=lambda s: order[s.target])
            groups.update({s.target: group for s in group})
    return groups


def _held_layout(placeholders: list) -> str:
    """"kernel" / "kernel_t" for a weight whose every use is the weight of a convolution /
    transposed convolution (held with its spatial axes first), else "torch"."""
    import torch.utils._pytree as pytree
    layouts = set()
    for user in (u for p in placeholders for u in p.users):
        name = op_name(user.target) if user.op == "call_function" else ""
        leaves = pytree.tree_leaves((list(user.args), dict(user.kwargs)))
        mine = [any(a is p for p in placeholders) for a in leaves]
        if sum(mine) != 1 or len(user.args) < 2 or not any(user.args[1] is p for p in placeholders):
            return "torch"  # used elsewhere than the weight slot (or inside a list)
        if name.startswith(("aten.conv1d", "aten.conv2d", "aten.conv3d")):
            layout = "kernel"
        elif name.startswith("aten.conv_transpose"):
            layout = "kernel_t"
        elif name == "aten.convolution.default":
            layout = "kernel_t" if user.args[6] else "kernel"
        else:
            return "torch"
        layouts.add(layout)
    return layouts.pop() if len(layouts) == 1 else "torch"


def _norm_attrs(module, node, path: str, placeholders: dict, entries: set) -> dict:
    """momentum (None: the cumulative average) and the running buffers' entry names of a
    BatchNorm / InstanceNorm node."""
    import torch
    arg = node.args[3] if len(node.args) > 3 else None
    running = placeholders.get(arg.name) if arg is not None else None
    momentum = node.args[6] if len(node.args) > 6 else 0.1
    try:
        owner = module.get_submodule(path) if path else module
    except AttributeError:
        owner = None
    if isinstance(owner, torch.nn.modules.batchnorm._NormBase):
        momentum = owner.momentum
    instance = "instance_norm" in str(node.target)
    if instance and momentum is None:  # torch's _InstanceNorm passes 0.0 and counts no batches
        momentum = 0.0
    if running is None:
        return {"momentum": momentum}
    stem = running.removesuffix("running_mean")
    buffers = {"running_mean": running, "running_var": stem + "running_var"}
    if stem + "num_batches_tracked" in entries and not instance:
        buffers["num_batches_tracked"] = stem + "num_batches_tracked"
    return {"momentum": momentum, "buffers": buffers}


def import_torch(module, example, *, dtype=None, origin: dict | None = None) -> nnx.Module:
    """A unet-jax model computing what `module` computes, in eval mode.

    `example`: an input tensor in torch's layout, (N, C, H, W) or (N, C, D, H, W). The model
    takes channels-last input (N, H, W, C) / (N, D, H, W, C) of any size the module takes and
    returns the module's output structure, image-shaped tensors channels-last. Its
    parameters and buffers keep their state_dict names: `to_torch_state_dict(model)` loads
    into the module's class with strict=True. `dtype` casts floating parameters; `origin`
    (JSON data) is recorded in the model's config and saved with it.
    """
    captured = capture(module, example)
    for note in captured.notes:  # e.g. a static export: other sizes will be refused
        warnings.warn(f"import_torch: {note}", stacklevel=2)
    config = ImportedConfig(graph_format.dumps(captured.graph), captured.num_classes,
                            captured.in_channels, graph_format.dumps(origin or {}))
    model, _ = load_into(lambda: build(config), key_map(config), captured.state,
                         target=f"imported {type(module).__name__}",
                         source=f"{type(module).__name__}.state_dict()", strict=True, dtype=dtype)
    model.eval()
    return model
