"""One engine that applies a key map in both directions.

Import: every torch key must match exactly one rule (or an explicit ignore pattern), every
Param/BatchStat leaf of the model must be assigned exactly once (keys a rule names as
aliases of one tensor must agree), shapes and dtype kinds
must agree; all problems are collected and raised together. Export is the exact inverse.
"""

import re
from collections.abc import Callable, Iterable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from unet_jax.models.keymap import Rule


class ConversionError(ValueError):
    """A checkpoint does not fit a model; the message lists every offending key."""

    def __init__(self, target: str, source: str, missing: list[str], unexpected: list[str],
                 mismatched: list[str]):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        counts = (f"{len(missing)} missing, {len(unexpected)} unexpected, "
                  f"{len(mismatched)} mis-shaped")
        lines = [f"{source} does not fit {target}: {counts}"]
        for head, keys in (("- in model, not in checkpoint:", missing),
                           ("+ in checkpoint, not in model:", unexpected),
                           ("~ shape or dtype mismatch:", mismatched)):
            if keys:
                lines += [head] + [f"    {k}" for k in keys]
        super().__init__("\n".join(lines))


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _shape_in_torch(rule: Rule, flax_shape: tuple) -> tuple:
    """The torch shape that becomes `flax_shape` under `rule` (a view: nothing allocated)."""
    return rule.transform.to_torch(np.broadcast_to(np.zeros((), bool), flax_shape)).shape


def _rule_for(rules: list[Rule], key: str, *, torch_side: bool) -> tuple[Rule, str] | None:
    hits = [(r, t) for r in rules
            if (t := (r.match_torch(key) if torch_side else r.match_flax(key))) is not None]
    if len(hits) > 1:  # a key map bug, not a user error
        raise AssertionError(f"key map is ambiguous for {key!r}: {[r for r, _ in hits]}")
    return hits[0] if hits else None


def load_into(make_model: Callable[[], nnx.Module], rules: list[Rule],
              state_dict: Mapping[str, np.ndarray], *, target: str, source: str,
              strict: bool = True, ignore: Iterable[str] = (), dtype=None
              ) -> tuple[nnx.Module, dict[str, list[str]]]:
    """Build the model `make_model` describes with the weights of `state_dict`.

    `ignore` holds regexes of torch keys that are deliberately unused (e.g. `fc\\..*`).
    Non-strict loads keep the initial values of missing leaves and skip unexpected keys;
    shape mismatches are errors either way. Floating arrays are cast to `dtype` (default:
    the model's own). Returns the model and a report {"mapped", "ignored", "defaulted",
    "skipped"} of torch keys.
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(make_model))
    # weights and statistics come from the checkpoint; other variables (an imported net's
    # constants, dropout key) keep the model's values
    leaves = {_dotted(p): v for p, v in abstract.flat_state() if isinstance(v, nnx.Param | nnx.BatchStat)}
    ignore_res = [re.compile(p) for p in ignore]
    values: dict[str, np.ndarray] = {}
    first_key: dict[str, str] = {}  # the torch key that gave each leaf its value
    report: dict[str, list[str]] = {"mapped": [], "ignored": [], "defaulted": [], "skipped": []}
    unexpected, mismatched = [], []

    for key, array in state_dict.items():
        if any(p.fullmatch(key) for p in ignore_res):
            report["ignored"].append(key)
            continue
        hit = _rule_for(rules, key, torch_side=True)
        if hit is None or hit[1] not in leaves:
            unexpected.append(f"{key} {tuple(array.shape)}")
            continue
        rule, path = hit
        want = leaves[path].get_value()
        if array.ndim != len(want.shape) or rule.transform.to_flax(array).shape != want.shape:
            mismatched.append(f"{key}: checkpoint {tuple(array.shape)}, model expects "
                              f"{_shape_in_torch(rule, want.shape)}")
            continue
        if np.issubdtype(want.dtype, np.floating) != np.issubdtype(array.dtype, np.floating):
            mismatched.append(f"{key}: checkpoint dtype {array.dtype}, model expects {want.dtype}")
            continue
        value = rule.transform.to_flax(array)
        if path in values and not np.array_equal(values[path], value, equal_nan=True):
            mismatched.append(f"{key}: the module holds it as the same tensor as {first_key[path]}, "
                              "but the checkpoint gives them different values")
            continue
        values[path] = value
        first_key.setdefault(path, key)
        report["mapped"].append(key)

    missing = []
    for path in leaves.keys() - values.keys():
        hit = _rule_for(rules, path, torch_side=False)
        if hit is None:  # a key map bug, not a user error
            raise AssertionError(f"model leaf {path!r} has no rule in the key map")
        rule, key = hit
        if rule.optional:
            report["defaulted"].append(key)
        elif key not in state_dict:
            missing.append(f"{key} {_shape_in_torch(rule, leaves[path].get_value().shape)}")
    if mismatched or (strict and (missing or unexpected)):
        raise ConversionError(target, source, sorted(missing), unexpected, mismatched)
    report["skipped"] = unexpected

    if len(values) < len(abstract.flat_state()):  # something keeps its initial value
        initial = {_dotted(p): v.get_value() for p, v in nnx.state(make_model()).flat_state()}
        values = {path: values.get(path, initial[path]) for path in initial}

    def cast(path: str, var: nnx.Variable):
        want = var.get_value().dtype
        if dtype is not None and jnp.issubdtype(want, jnp.floating):
            want = dtype
        return var.replace(value=jnp.asarray(values[path], dtype=want))

    state = nnx.State.from_flat_path({p: cast(_dotted(p), v) for p, v in abstract.flat_state()})
    return nnx.merge(graphdef, state), report


def export_state(model: nnx.Module, rules: list[Rule]) -> dict[str, np.ndarray]:
    """The torch state_dict {key: np.ndarray} of `model`, by the same rules reversed."""
    out = {}
    for path, var in nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)).flat_state():
        dotted = _dotted(path)
        hit = _rule_for(rules, dotted, torch_side=False)
        if hit is None:
            raise AssertionError(f"model leaf {dotted!r} has no rule in the key map")
        rule, key = hit
        out[key] = np.array(rule.transform.to_torch(np.asarray(var.get_value())), order="C")
        for alias in rule.aliases:  # torch lists a shared tensor under each of its names
            out[alias] = out[key].copy()
    return out
