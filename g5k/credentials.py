"""Grid'5000 API credentials: $G5K_USER/$G5K_PASSWORD, else ~/.python-grid5000.yaml.
They are handed to the HTTP client and nowhere else: never printed, logged or stored."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from g5k import G5kError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def load_credentials(path: Path | None = None) -> Credentials | None:
    """None when neither source exists (e.g. on a frontend, where the API needs none)."""
    if os.environ.get("G5K_USER") and os.environ.get("G5K_PASSWORD"):
        return Credentials(os.environ["G5K_USER"], os.environ["G5K_PASSWORD"])
    path = path or Path.home() / ".python-grid5000.yaml"
    if not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Credentials(str(raw["username"]), str(raw["password"]))
    except (yaml.YAMLError, KeyError, TypeError):
        raise G5kError(f"{path}: expected 'username:' and 'password:' keys") from None
