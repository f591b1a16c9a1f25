"""Tensors of an imported network: channels-last arrays where torch's layout is NC... and
the op does not care, torch's layout where it does (views, permutes, matmuls).

A `T` holds the array and whether it is channels-last: a torch tensor of shape
(N, C, *S) stored as (N, *S, C). Ranks 3-5 can be channels-last (1-D, 2-D, 3-D images)."""

import jax
import jax.numpy as jnp
import numpy as np


def to_last(rank: int) -> tuple[int, ...]:
    """The permutation NC... -> N...C."""
    return (0, *range(2, rank), 1)


def to_first(rank: int) -> tuple[int, ...]:
    """The permutation N...C -> NC..."""
    return (0, rank - 1, *range(1, rank - 1))


class T:
    """One tensor value: `a` the array, `cl` whether it is stored channels-last."""

    __slots__ = ("a", "cl")

    def __init__(self, a: jax.Array, cl: bool = False):
        self.a, self.cl = a, cl

    @property
    def rank(self) -> int:
        return self.a.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Torch's shape."""
        s = self.a.shape
        return (s[0], s[-1], *s[1:-1]) if self.cl else s

    @property
    def dtype(self):
        return self.a.dtype

    def torch(self) -> jax.Array:
        """The array in torch's layout."""
        return jnp.transpose(self.a, to_first(self.rank)) if self.cl else self.a

    def last(self) -> jax.Array:
        """The array channels-last (for ranks 3-5)."""
        return self.a if self.cl else jnp.transpose(self.a, to_last(self.rank))

    def axis(self, dim: int) -> int:
        """The array axis of torch dimension `dim`."""
        dim %= self.rank
        if not self.cl:
            return dim
        return 0 if dim == 0 else self.rank - 1 if dim == 1 else dim - 1

    def axes(self, dims) -> tuple[int, ...]:
        return tuple(self.axis(d) for d in dims)

    def order(self) -> list[int]:
        """The torch dimension held by each array axis."""
        return list(to_last(self.rank)) if self.cl else list(range(self.rank))


def channels_last(a: jax.Array) -> T:
    return T(a, cl=True)


def like(t: T, a: jax.Array) -> T:
    """A result laid out as `t` (elementwise ops)."""
    return T(a, t.cl)


def reduced(t: T, a: jax.Array, dims: tuple[int, ...]) -> T:
    """The value of a reduction of `t` over torch dims `dims` (dropped) computed on its
    array: back in torch's order when the kept dims are not in it."""
    kept = [d for d in t.order() if d not in {d % t.rank for d in dims}]
    if kept == sorted(kept):
        return T(a)
    return T(jnp.transpose(a, tuple(np.argsort(kept))))


def aligned(values: list) -> tuple[list, bool]:
    """Operands of one elementwise op or concatenation in one layout: channels-last when any
    tensor of the highest rank is; lower-rank tensors broadcast as torch broadcasts them.
    Returns (arrays or scalars, channels-last?)."""
    tensors = [v for v in values if isinstance(v, T)]
    rank = max(t.rank for t in tensors)
    cl = any(t.cl and t.rank == rank for t in tensors) and rank >= 3
    out = []
    for v in values:
        if not isinstance(v, T):
            out.append(v)
        elif not cl:
            out.append(v.torch())
        elif v.rank == rank:
            out.append(v.last())
        else:
            padded = jnp.reshape(v.torch(), (1,) * (rank - v.rank) + v.shape)
            out.append(jnp.transpose(padded, to_last(rank)))
    return out, cl


class Kernel:
    """A convolution weight held with its spatial axes first (graph layouts "kernel" and
    "kernel_t"): `a` the held array, `perm` the torch axis at each of its axes."""

    __slots__ = ("a", "perm")

    def __init__(self, a: jax.Array, perm: tuple[int, ...]):
        self.a, self.perm = a, perm

    @property
    def rank(self) -> int:
        return self.a.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Torch's shape."""
        return tuple(self.a.shape[i] for i in np.argsort(self.perm))

    @property
    def dtype(self):
        return self.a.dtype

    def torch(self) -> jax.Array:
        return jnp.transpose(self.a, tuple(int(i) for i in np.argsort(self.perm)))

    def held(self, perm: tuple[int, ...]) -> jax.Array:
        """The array with torch's axes in the order `perm`."""
        return self.a if perm == self.perm else jnp.transpose(self.torch(), perm)
