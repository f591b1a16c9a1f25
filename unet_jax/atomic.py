"""Atomic writes: a file or folder appears whole or not at all (written beside its final
name, then renamed into place), so a kill, a full disk or an error never leaves half of one."""

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def staged_file(path: Path):
    """A hidden file beside `path` to write into, renamed over `path` when the block succeeds
    and removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    try:
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """`path.write_text(text)`, atomically."""
    with staged_file(path) as staging:
        staging.write_text(text)


@contextlib.contextmanager
def staged_directory(directory: Path):
    """A staging folder beside `directory` (new or empty), renamed into place when the block
    succeeds and removed when it fails: nobody ever sees a partial `directory`."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield staging
        if directory.exists():
            directory.rmdir()
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def io_failure(e: BaseException, limit: int = 300) -> str:
    """A read/write error's first line, its end kept when long (where tensorstore puts the
    OS's reason, e.g. "File too large [os_error_code='27']"). Silences asyncio's reports of
    the reads and writes orbax then abandons: this error says it once."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    line = str(e).splitlines()[0] if str(e) else type(e).__name__
    return line if len(line) <= limit else "..." + line[-limit:]
