"""A private runtime folder for the files processes of one user share on a node (locks):
never a fixed path in /tmp that another user could create first, or read, or replace."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sweeper.errors import SweeperError


def runtime_dir() -> Path:
    """`$XDG_RUNTIME_DIR/sweeper`, else `/tmp/sweeper-<uid>`: created 0700; refused when it
    belongs to someone else or others can enter it."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "sweeper" if base else Path(f"/tmp/sweeper-{os.getuid()}")
    try:
        folder.mkdir(mode=0o700, parents=bool(base), exist_ok=True)
    except OSError as exc:
        raise SweeperError(f"{folder}: cannot create the runtime folder ({exc.strerror})") from None
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SweeperError(f"{folder}: not a folder of user {os.getuid()}: remove it or set "
                           "XDG_RUNTIME_DIR")
    if info.st_mode & 0o077:
        raise SweeperError(f"{folder}: others may enter it (mode {info.st_mode & 0o777:o}); "
                           f"chmod 700 {folder}")
    return folder
