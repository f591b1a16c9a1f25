"""One line when a jitted step compiles for a new input shape, and how long that took
(`compiling the train step for 8x32x32x3 batches... 23.4 s`): the first call of a shape sits
silent for seconds to a minute otherwise. Off unless `ENABLED` (the command line sets it);
printed by process 0 only, with any progress bars lifted while it is written."""

import sys
import time

import jax
from tqdm import tqdm

ENABLED = False


class Announced:
    """`fn` that, when `ENABLED`, prints a line the first time it is called with a new model
    config and new shapes of its array arguments (when jit compiles it)."""

    def __init__(self, fn, what: str, unit: str = "batches"):
        self.fn, self.what, self.unit = fn, what, unit
        self.seen: set = set()

    def __call__(self, *args):
        key = tuple((tuple(a.shape), str(a.dtype)) if hasattr(a, "shape") and hasattr(a, "dtype")
                    else repr(getattr(a, "config", None)) for a in args)
        if not ENABLED or key in self.seen or jax.process_index() != 0:
            self.seen.add(key)
            return self.fn(*args)
        self.seen.add(key)
        shape = next(("x".join(map(str, a.shape)) for a in args if hasattr(a, "shape")), "")
        with tqdm.external_write_mode(file=sys.stdout, nolock=True):
            print(f"compiling {self.what}" + (f" for {shape} {self.unit}" if shape else "")
                  + "...", end="", flush=True)
            started = time.perf_counter()
            try:
                out = self.fn(*args)
            finally:
                print(f" {time.perf_counter() - started:.1f} s", flush=True)
        return out
