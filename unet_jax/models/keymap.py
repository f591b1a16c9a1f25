"""Declarative torch <-> Flax key maps.

A key map is a list of `Rule`s. A rule pairs a torch key pattern with a Flax path pattern
(`{i}` stands for a module index and matches digits) and names the array transform. The
same rules read both ways, so import and export cannot drift apart. Build them with one
helper call per torch module: `conv(...)`, `conv_t(...)`, `bn(...)`.
"""

import dataclasses
import re
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Transform:
    """How one tensor changes layout between torch and Flax."""

    name: str
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


IDENTITY = Transform("identity", lambda a: a, lambda a: a)
# Conv2d weight: torch (out, in, kh, kw) <-> Flax (kh, kw, in, out).
CONV = Transform("conv", lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
# ConvTranspose2d weight: torch (in, out, kh, kw) <-> (kh, kw, in, out); the same permutation
# is its own inverse.
CONV_T = Transform("conv_t", lambda a: a.transpose(2, 3, 0, 1), lambda a: a.transpose(2, 3, 0, 1))
# num_batches_tracked: torch int64 scalar <-> int32 (JAX's default integer).
COUNT = Transform("count", lambda a: a.astype(np.int32), lambda a: a.astype(np.int64))

_INDEX = re.compile(r"\{(\w+)\}")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One torch tensor <-> one Flax leaf, for every index `{name}` the patterns contain."""

    torch: str
    flax: str
    transform: Transform = IDENTITY
    optional: bool = False  # may be absent from a checkpoint; then the model's value is kept
    aliases: tuple[str, ...] = ()  # further torch keys of the same tensor (literal names)

    def match_torch(self, key: str) -> str | None:
        if key in self.aliases:
            return self.flax
        return _match(self.torch, self.flax, key)

    def match_flax(self, path: str) -> str | None:
        return _match(self.flax, self.torch, path)


def _compile(pattern: str) -> re.Pattern:
    parts = _INDEX.split(pattern)
    # split() alternates literal text and index names.
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>\\d+)" for i, p in enumerate(parts))
    return re.compile(regex + r"\Z")


_CACHE: dict[str, re.Pattern] = {}


def _match(pattern: str, template: str, key: str) -> str | None:
    regex = _CACHE.get(pattern) or _CACHE.setdefault(pattern, _compile(pattern))
    m = regex.match(key)
    return template.format(**m.groupdict()) if m else None


def conv(torch: str, flax: str | None = None, *, bias: bool = True) -> list[Rule]:
    """nn.Conv2d at `torch` <-> `nn.Conv2d` at `flax`."""
    flax = torch if flax is None else flax
    rules = [Rule(f"{torch}.weight", f"{flax}.kernel", CONV)]
    return rules + [Rule(f"{torch}.bias", f"{flax}.bias")] if bias else rules


def conv_t(torch: str, flax: str | None = None) -> list[Rule]:
    """nn.ConvTranspose2d at `torch` <-> `nn.ConvTranspose2d` at `flax`."""
    flax = torch if flax is None else flax
    return [Rule(f"{torch}.weight", f"{flax}.kernel", CONV_T), Rule(f"{torch}.bias", f"{flax}.bias")]


def bn(torch: str, flax: str | None = None) -> list[Rule]:
    """nn.BatchNorm2d at `torch` <-> `nn.BatchNorm` at `flax`.

    `num_batches_tracked` is optional on import (checkpoints from torch < 0.4.1 lack it).
    """
    flax = torch if flax is None else flax
    return [
        Rule(f"{torch}.weight", f"{flax}.scale"),
        Rule(f"{torch}.bias", f"{flax}.bias"),
        Rule(f"{torch}.running_mean", f"{flax}.mean"),
        Rule(f"{torch}.running_var", f"{flax}.var"),
        Rule(f"{torch}.num_batches_tracked", f"{flax}.num_batches_tracked", COUNT, optional=True),
    ]


def prefixed(prefix: str, rules: list[Rule], flax_prefix: str | None = None) -> list[Rule]:
    """The same rules under a torch attribute `prefix` (and Flax `flax_prefix`)."""
    flax_prefix = prefix if flax_prefix is None else flax_prefix
    return [dataclasses.replace(r, torch=f"{prefix}.{r.torch}", flax=f"{flax_prefix}.{r.flax}")
            for r in rules]
