"""Sweep and space names: they become experiment names and file and folder names, so a
name is letters, digits, `.`, `_` and `-`, and a name read back from a store is made safe
before it names a file."""

from __future__ import annotations

import re

from sweeper.errors import SweeperError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def checked_name(name: str, key: str) -> str:
    """`name` if it is a valid sweep or space name, else one line naming `key`."""
    if not NAME.fullmatch(name):
        raise SweeperError(f"{key}: {name!r} is not a name (letters, digits, '.', '_', '-'; "
                           "at most 100; starting with a letter or digit)")
    return name


def file_safe(name: str) -> str:
    """A name from a store as a file name: no separator, no leading dot, nothing else."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:100]
    return safe or "unnamed"
