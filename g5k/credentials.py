"""How to reach the Grid'5000 API: python-grid5000's file ~/.python-grid5000.yaml, with
$G5K_USER/$G5K_PASSWORD taking precedence for the login.

The file's keys are those python-grid5000 reads: `Grid5000.from_yaml` passes the mapping to
`Grid5000(uri=, username=, password=, verify_ssl=, ...)` (python-grid5000 1.2.5,
grid5000/__init__.py). All four are optional: on a frontend the API needs no password, and
the file python-grid5000 recommends there holds only `verify_ssl:`. Other keys are ignored,
as python-grid5000's `**kwargs` ignores them, except its client-certificate ones.

A password is handed to the HTTP client and nowhere else: never printed, logged or stored.
A file that others may read while it holds a password, or that others may write (its `uri`
decides where the password goes), is refused. python-grid5000 itself checks nothing when
reading; its `grid5000-auth` writes the file with mode 600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from g5k import G5kError


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    uri: str | None = None  # the API's base URL
    verify_ssl: bool | str | None = None  # a CA bundle path; None: see g5k.api.tls_verify


def credentials_path() -> Path:
    return Path.home() / ".python-grid5000.yaml"


def load_credentials(path: Path | None = None) -> Credentials | None:
    """None when there is neither a file nor $G5K_USER/$G5K_PASSWORD."""
    path = path or credentials_path()
    raw = _read(path) if path.exists() else None
    if os.environ.get("G5K_USER") and os.environ.get("G5K_PASSWORD"):
        raw = {**(raw or {}), "username": os.environ["G5K_USER"],
               "password": os.environ["G5K_PASSWORD"]}
    if raw is None:
        return None
    if (raw.get("username") is None) != (raw.get("password") is None):
        raise G5kError(f"{path}: username and password go together (neither on a frontend)")
    return Credentials(
        username=_text(path, raw, "username"), password=_text(path, raw, "password"),
        uri=_text(path, raw, "uri"), verify_ssl=_verify_ssl(path, raw.get("verify_ssl")))


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise G5kError(f"{path}: not valid YAML") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise G5kError(f"{path}: expected keys username, password, uri, verify_ssl")
    if "sslcert" in raw or "sslkey" in raw:
        raise G5kError(f"{path}: sslcert/sslkey: client certificates are not supported here; "
                       "use username and password, or nothing on a frontend")
    mode = path.stat().st_mode & 0o777
    if mode & 0o022:
        raise G5kError(f"{path}: mode {mode:04o} lets other users change where the API "
                       f"requests go: chmod 600 {path}")
    if raw.get("password") is not None and mode & 0o077:
        raise G5kError(f"{path}: mode {mode:04o} lets other users read the password it "
                       f"holds: chmod 600 {path}")
    return raw


def _text(path: Path, raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise G5kError(f"{path}: {key}: must be a string")
    return str(value)


def _verify_ssl(path: Path, value: Any) -> bool | str | None:
    """As python-grid5000 passes it to requests' `verify`: a bool, or a CA bundle path."""
    if value is None or isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise G5kError(f"{path}: verify_ssl: must be true, false or a CA bundle path")
    bundle = Path(value).expanduser()
    if not bundle.is_file():
        raise G5kError(f"{path}: verify_ssl: {value} is not a file (true, false or a CA "
                       "bundle path, e.g. /etc/ssl/certs/ca-certificates.crt)")
    return str(bundle)
