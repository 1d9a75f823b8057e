"""Node energy from Kwollect power samples: the trial's time window, integrated to joules.

Integration is the trapezoid rule over consecutive samples of each node. A gap (two
consecutive samples further apart than `max_gap_s`, e.g. a wattmeter that stopped
reporting) is not bridged: its duration is reported as `uncovered_s`, so a reader sees how
much of the window the joules stand for. Given the trial's window, a segment that straddles
an edge counts only inside it, the power at the edge interpolated linearly between its two
samples; nothing is extrapolated beyond the first or last sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

# Preferred first: a dedicated wattmeter, then the node's BMC power reading.
POWER_METRICS = ("wattmetre_power_watt", "bmc_node_power_watt")


@dataclass
class NodeEnergy:
    joules: dict[str, float] = field(default_factory=dict)
    covered_s: dict[str, float] = field(default_factory=dict)
    uncovered_s: dict[str, float] = field(default_factory=dict)
    last_sample_s: dict[str, float] = field(default_factory=dict)  # epoch s of the last one
    metric: str = ""

    @property
    def total_j(self) -> float:
        return sum(self.joules.values())


def choose_power_metric(available: list[str]) -> str | None:
    """The best power metric a cluster offers (from its reference-API `metrics` list)."""
    return next((m for m in POWER_METRICS if m in available), None)


def integrate(samples: list[dict], metric: str, max_gap_s: float = 5.0,
              window: tuple[datetime, datetime] | None = None) -> NodeEnergy:
    """Joules per node from Kwollect samples ({timestamp, device_id, metric_id, value}).
    With `window`, only the part of each segment inside it counts, the power at a window
    edge interpolated between the two samples around it (fetch a little beyond the window
    so that those samples exist)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        if sample.get("metric_id") != metric or sample.get("value") is None:
            continue
        moment = datetime.fromisoformat(str(sample["timestamp"]).replace("Z", "+00:00"))
        series.setdefault(str(sample["device_id"]), []).append(
            (moment.timestamp(), float(sample["value"])))
    lo, hi = ((window[0].timestamp(), window[1].timestamp()) if window
              else (float("-inf"), float("inf")))
    energy = NodeEnergy(metric=metric)
    for node, points in series.items():
        points.sort()
        joules = covered = uncovered = 0.0
        for (t0, p0), (t1, p1) in pairwise(points):
            a, b = max(t0, lo), min(t1, hi)
            if b <= a:
                continue
            if t1 - t0 > max_gap_s:
                uncovered += b - a
                continue
            slope = (p1 - p0) / (t1 - t0)
            joules += (p0 + slope * (a - t0) + p0 + slope * (b - t0)) / 2 * (b - a)
            covered += b - a
        energy.joules[node] = joules
        energy.covered_s[node] = covered
        energy.uncovered_s[node] = uncovered
        energy.last_sample_s[node] = points[-1][0]
    return energy
