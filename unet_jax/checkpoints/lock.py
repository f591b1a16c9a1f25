"""One run per training workdir: `WORKDIR/.lock`, created atomically (O_EXCL), names the
process holding it. A lock whose process is gone (same host: no such pid, or the pid now
belongs to a later process) is stale and taken over, with one line saying so."""

import contextlib
import json
import os
import socket
import time
from pathlib import Path

LOCK = ".lock"


class WorkdirInUseError(ValueError):
    """Another live process trains in this workdir."""


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[1] if stat else None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _stat(int(holder["pid"]))
    if stat is None:
        return True
    state, started = stat
    return state != "Z" and holder.get("pid_start") in (None, started)  # a zombie or a new process


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # being written, or damaged: treated as held by an unknown process


@contextlib.contextmanager
def held(workdir: Path):
    """Hold `workdir`'s lock for the `with` block; raise WorkdirInUseError naming the holder."""
    path = Path(workdir) / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": _start_time(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if not holder or _alive(holder):
                who = (f"process {holder['pid']} on {holder['host']} (since {holder.get('since')})"
                       if holder else "another process")
                other_host = holder and holder.get("host") != socket.gethostname()
                raise WorkdirInUseError(
                    f"{workdir} is in use by {who}; wait for it to finish or choose another "
                    "--workdir" + (f" (if that run is dead, delete {path})" if other_host or not holder
                                   else "")) from None
            print(f"took over the stale lock of process {holder['pid']} on {holder['host']} "
                  f"(since {holder.get('since')}; no longer running)")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise WorkdirInUseError(f"{workdir}: could not take its lock {path}")
    try:
        yield
    finally:
        if _read(path).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
