"""Fault injection for the kill -9 harness (`scripts/kill_harness.py`, `tests/test_kill.py`):
with `UNET_JAX_KILL_AT=POINT:N` set, the process sends itself SIGKILL the N-th time it
reaches `point(POINT)`. Points: `step` (a train step dispatched), `checkpoint` (a periodic
save handed to orbax, still being written in the background), `validation` (an eval batch
dispatched), `logged` (an epoch's record written, its best checkpoint not yet), `pictures`
(the final pictures being drawn). Unset, `point` does nothing."""

import os
import signal

POINTS = ("step", "checkpoint", "validation", "logged", "pictures")
_counts: dict[str, int] = {}


def point(name: str) -> None:
    target = os.environ.get("UNET_JAX_KILL_AT")
    if not target:
        return
    where, _, nth = target.partition(":")
    _counts[name] = _counts.get(name, 0) + 1
    if name == where and _counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
