"""Counter windows around one client's own work, for trials that share a node.

A node counter (RAPL package/DRAM, NVML) sees every process of the node, so a window around
a client's work also holds what other trials did meanwhile. The client is attributed the
window's joules times its share of the machine's busy CPU time in that window (the process's
CPU seconds over the busy CPU seconds of `/proc/stat`), as process-level power tools such as
Scaphandre and PowerJoular do. The result is labelled `measured` with that attribution named.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from sweeper.energy.node import NodeMeter, open_node_meter

# /proc/stat cpu columns: user nice system idle iowait irq softirq steal (guest is in user)
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def machine_busy_cpu_s(stat_path: str = "/proc/stat") -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    with open(stat_path) as stat:
        fields = stat.readline().split()[1:]
    return sum(int(fields[i]) for i in _BUSY_COLUMNS if i < len(fields)) / os.sysconf(
        "SC_CLK_TCK")


def attributed_j(window_j: float, process_cpu_s: float, machine_cpu_s: float) -> float:
    """The window's joules times the process's share of the machine's busy CPU time."""
    if machine_cpu_s <= 0:
        return 0.0
    return window_j * min(1.0, max(0.0, process_cpu_s / machine_cpu_s))


@dataclass
class Window:
    joules: float = 0.0  # attributed to this process


def _meter(choice: str) -> tuple[NodeMeter | None, list[str]]:
    return _opened(choice, os.environ.get("SWEEPER_POWERCAP_ROOT"))


@cache
def _opened(choice: str, powercap_root: str | None) -> tuple[NodeMeter | None, list[str]]:
    """One meter per process and choice (opening Zeus costs seconds)."""
    return open_node_meter(choice)


def windows_enabled(meters: str, isolation: str) -> bool:
    """Windows run for trials sharing a node whose meter choice admits a counter."""
    return isolation == "shared" and meters != "modeled"


def window_meter(meters: str) -> tuple[str | None, list[str]]:
    """The name of the counter client windows will read, or None and why not."""
    meter, reasons = _meter(meters)
    return (meter.name if meter is not None else None), reasons


@contextmanager
def client_window(meters: str, isolation: str) -> Iterator[Window | None]:
    """A counter window around the enclosed work, attributed by CPU share; None where the
    trial's meters give no counter (the modeled path then stands)."""
    meter = _meter(meters)[0] if windows_enabled(meters, isolation) else None
    if meter is None:
        yield None
        return
    window = Window()
    process_before, machine_before = time.process_time(), machine_busy_cpu_s()
    meter.start()
    try:
        yield window
    finally:
        window_j = sum(meter.stop().values())
        window.joules = attributed_j(window_j, time.process_time() - process_before,
                                     machine_busy_cpu_s() - machine_before)
