"""Resolving a registry entry: a registry maps a plug-in's name to "module:attr" where
importing the implementation is costly (torch, Flower), as Ray Tune maps search-algorithm
names to imports, so reading a kind's names (the leverage catalogue, YAML checks) imports
nothing heavy. `load` imports the one implementation a trial asks for."""

from __future__ import annotations

import importlib
from typing import Any


def load(ref: str) -> Any:
    """The object a "module:attr" reference names."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve(registry: dict[str, Any], name: str, kind: str) -> Any:
    """`registry[name]`, imported if it is a "module:attr" string; a `ValueError` naming the
    known ones if `name` is not registered."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r} (known: {', '.join(registry)})")
    entry = registry[name]
    return load(entry) if isinstance(entry, str) else entry
