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
    """Replace the section of `path` titled as `section` where it stands (or append it), so
    that prose written after it stays after it."""
    title = section.splitlines()[0]
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    head, *sections = old.split("\n## ")
    body = section.rstrip("\n") + "\n"
    titles = [("## " + part).splitlines()[0] for part in sections]
    if title in titles:
        sections[titles.index(title)] = body.removeprefix("## ")
        text = "\n## ".join([head, *sections])
    else:
        text = old.rstrip("\n") + "\n\n" + body
    path.write_text(text.rstrip("\n") + "\n")


def publish(section: str, path: Path | None) -> None:
    """Print the section; also write it into `path` when given."""
    print(section)
    if path is not None:
        write_section(path, section)
