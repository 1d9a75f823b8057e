"""The modules of Flower (and of its web stack) that sweeper's deployment engine patches,
found with what it patches in them: an upgrade that moves one fails loudly, naming it."""

from __future__ import annotations

import importlib
from types import ModuleType


def patched_module(name: str, *attributes: str) -> ModuleType:
    """Module `name`, imported, which must have every one of `attributes`."""
    module = importlib.import_module(name)
    missing = [attribute for attribute in attributes if not hasattr(module, attribute)]
    if missing:
        raise RuntimeError(f"{name} has no {', '.join(missing)}: sweeper's deployment engine "
                           f"needs updating for the installed {name.split('.')[0]}")
    return module
