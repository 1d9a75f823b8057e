"""One lock per store folder: processes that create or open the stores' schemas (and a
sweep's first records) do so in turn, so two sweeps started at once on a new store do not
both create MLflow's and Optuna's tables (MLflow's migrations fail when they race)."""

from __future__ import annotations

import errno
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".sweeper.lock"
_held: dict[Path, int] = {}  # store folder -> nesting depth of this process's lock on it


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold the store's lock (re-entrant within a process; the folder is made if missing).
    A folder where the lock file cannot be made (read-only) is used unlocked: nothing can
    be created there."""
    folder = Path(store).resolve()
    if folder in _held:
        _held[folder] += 1
        try:
            yield
        finally:
            _held[folder] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = (folder / LOCK_FILE).open("a")
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held[folder] = 1
        try:
            yield
        finally:
            del _held[folder]
