"""The import graph of `unet_jax`, read from the source: no cycles between modules, package
dependencies one way (the order below), torch imported at module level only by
`unet_jax.parity`, and function-level imports only of heavy optional packages."""

import ast
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "unet_jax"
# Each layer may import the layers after it, never one before it.
LAYERS = [("cli",), ("parity",), ("programs",), ("train",), ("inference", "checkpoints"),
          ("convert",), ("models",), ("nn",), ("ops",), ("kernels",),
          ("data", "registry", "presets", "atomic", "interpolation", "compile_cache",
           "compile_notice")]
# What a function may import lazily: packages too heavy or optional for module level, the
# torch side (`unet_jax.parity`), and JAX itself in the bench (XLA_FLAGS set before JAX starts).
DEFERRED = {"torch", "torchvision", "albumentations", "tensorflow_datasets", "safetensors",
            "segmentation_models_pytorch", "monai", "dynamic_network_architectures", "PIL",
            "matplotlib", "tensorboardX", "cv2", "inspect", "re", "argparse",
            "nibabel", "scipy", "skimage", "nnunetv2"}  # the volume path's, imported when used
LAZY_JAX = {"unet_jax.parity.bench", "unet_jax.parity.bench_predict"}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text())
    return found


MODULES = _modules()


def _imports(tree: ast.Module, module: str):
    """(imported module, at module level?) for every import in `tree`."""
    def visit(nodes, top):
        for node in nodes:
            if isinstance(node, ast.Import):
                yield from ((a.name, top) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = module.split(".")[:len(module.split(".")) - node.level + (
                        1 if _is_package(module) else 0)]
                    base = ".".join(package + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names]
                yield from ((n if n in MODULES else base, top) for n in names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from visit(children, top and not isinstance(
                        node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))
    yield from visit(tree.body, True)


def _is_package(module: str) -> bool:
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()


def _internal(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return next((i for i, names in enumerate(LAYERS) if top in names), -1)


GRAPH = {m: {t for name, _ in _imports(tree, m) if (t := _internal(name)) and t != m}
         for m, tree in MODULES.items()}


def test_no_import_cycles():
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], itertools.count()

    def connect(v):
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                group.append(w)
            on_stack.discard(v)
            if group:
                cycles.append(sorted([v, *group]))

    for v in MODULES:
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_packages_depend_one_way():
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                    if m != "unet_jax" and _layer(m) >= 0 and _layer(t) >= 0
                    and _layer(t) < _layer(m))
    assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)
    unplaced = sorted({m.split(".")[1] for m in MODULES if m.count(".") and _layer(m) < 0})
    assert not unplaced, f"modules in no layer: {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_torch_and_deferred_imports(module):
    for name, top in _imports(MODULES[module], module):
        root = name.split(".")[0]
        if top and root in ("torch", "torchvision", "segmentation_models_pytorch"):
            assert module.startswith("unet_jax.parity"), f"{module} imports {name} at module level"
        if not top and root not in DEFERRED and not name.startswith("unet_jax.parity"):
            assert module in LAZY_JAX, f"{module} imports {name} inside a function"


def test_the_graph_is_read():
    """The checks above see real edges (a broken reader would pass them vacuously)."""
    assert "unet_jax.models.build" in GRAPH["unet_jax.convert.api"]
    assert "unet_jax.registry" in GRAPH["unet_jax.models.smp_unet"]
    assert sum(map(len, GRAPH.values())) > 200
