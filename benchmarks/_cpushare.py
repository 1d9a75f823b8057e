"""A CPU quota (Linux CFS bandwidth control) that a process and all it later starts share.

Gives each node of a one-machine Ray cluster a CPU share of its own, so adding a node adds
capacity the way a real node does instead of splitting the same cores. cgroup v2
(`cpu.max`) or v1 (`cpu.cfs_quota_us`); needs write access to the cgroup tree (root).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _cpu_hierarchy() -> tuple[Path, bool]:
    """(directory new cgroups go under, whether it is cgroup v2)."""
    controllers = ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return ROOT, True
    if (ROOT / "cpu" / "cpu.cfs_quota_us").exists():
        return ROOT / "cpu", False
    raise SystemExit(f"{ROOT}: no cgroup cpu controller to give each node its own CPU share")


def _descendants(pid: int) -> list[int]:
    """The children of `pid`, their children, and so on (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            found += [child, *_descendants(child)]
    return found


class CpuShare:
    """A cgroup limited to `cpus` CPUs (e.g. 0.6 = 60 ms of CPU per 100 ms)."""

    def __init__(self, name: str, cpus: float) -> None:
        parent, v2 = _cpu_hierarchy()
        self.path = parent / name
        self.path.mkdir(exist_ok=True)
        quota = int(cpus * PERIOD_US)
        if v2:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def adopt(self, pid: int) -> None:
        """Move `pid` and its descendants in; what they start afterwards is born inside."""
        for member in [pid, *_descendants(pid)]:
            (self.path / "cgroup.procs").write_text(str(member))

    def remove(self) -> None:
        """Delete the cgroup once its processes have exited (leftovers go back to the root)."""
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                (self.path.parent / "cgroup.procs").write_text(pid)
        self.path.rmdir()
