"""Store failures as one line naming the file: a corrupt, locked, read-only or full SQLite
store (MLflow's or Optuna's), or an artifact that cannot be written.

MLflow and Optuna wrap SQLAlchemy's errors in their own, and neither says which file
failed: `watch_stores` makes every SQLAlchemy engine of the process note its database file
on the errors it raises, and `store_error` finds the cause in an exception's chain."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

from sweeper.errors import StoreError

FILE_ATTR = "sweeper_store_file"
SQLITE_KINDS = {  # SQLite primary result code -> what the user is told
    "SQLITE_CORRUPT": "corrupt", "SQLITE_NOTADB": "corrupt",
    "SQLITE_BUSY": "locked by another process", "SQLITE_LOCKED": "locked by another process",
    "SQLITE_READONLY": "read-only", "SQLITE_FULL": "disk full",
    "SQLITE_CANTOPEN": "cannot be opened", "SQLITE_IOERR": "I/O error",
    "SQLITE_PERM": "permission denied",
}
OS_KINDS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file size limit reached", errno.EROFS: "read-only",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EIO: "I/O error"}


def _note_file(context) -> None:
    """SQLAlchemy `handle_error` listener: the failing engine's database file, kept on the
    exception for `store_error` (the exception itself is left alone)."""
    database = context.engine.url.database if context.engine is not None else None
    if database:
        for exc in (context.original_exception, context.sqlalchemy_exception):
            if exc is not None:
                setattr(exc, FILE_ATTR, database)


def watch_stores() -> None:
    """Name the file on every SQLAlchemy error of this process; keep MLflow from printing a
    traceback of a database error it then raises anyway."""
    if not event.contains(Engine, "handle_error", _note_file):
        event.listen(Engine, "handle_error", _note_file)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def describe(exc: BaseException) -> str | None:
    """What a SQLite or file-system error means for a store, with the system's words, e.g.
    "disk full (No space left on device)"; None for any other error."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        kind = next((kind for code, kind in SQLITE_KINDS.items()
                     if name == code or name.startswith(code + "_")), "database error")
        detail = str(exc)
    elif isinstance(exc, OSError) and exc.errno in OS_KINDS:
        kind, detail = OS_KINDS[exc.errno], exc.strerror or str(exc)
    else:
        return None
    return f"{kind} ({detail.splitlines()[0]})" if detail else kind


def store_error(exc: BaseException, store: Path | None = None) -> StoreError | None:
    """The store failure behind `exc`, as one line naming the file (the database, else the
    file the system named, else the store folder); None when `exc` is not one."""
    chain = _chain(exc)
    for cause in chain:
        if isinstance(cause, StoreError):
            return cause
        what = describe(cause)
        if what is None:
            continue
        named = next((getattr(e, FILE_ATTR) for e in chain if hasattr(e, FILE_ATTR)), None)
        if isinstance(cause, OSError) and cause.filename:
            named = cause.filename
        where = named or (f"store {store}" if store is not None else "store")
        return StoreError(f"{where}: {what}")
    return None
