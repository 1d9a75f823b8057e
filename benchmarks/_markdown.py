"""Write one `## ` section of BENCHMARKS.md, replacing the section of the same title."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def machine() -> str:
    import os

    return (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads, Python {platform.python_version()}, torch {torch.__version__}")


def write_section(path: Path, section: str) -> None:
    title = section.splitlines()[0]
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    parts = old.split("\n## ")
    kept = [parts[0]] + [p for p in parts[1:] if ("## " + p).splitlines()[0] != title]
    path.write_text("\n## ".join(kept).rstrip("\n") + "\n\n" + section)


def publish(section: str, path: Path | None) -> None:
    """Print the section; also write it into `path` when given."""
    print(section)
    if path is not None:
        write_section(path, section)
