"""Whole-node joules of a trial from Kwollect: the power of the node(s) it ran on, over its
time window, integrated per node with the metric and the method that node's samples call
for (see `g5k.kwollect`). A *node energy source* for `sweeper.orchestrate.run_sweep` in
`isolation: node` mode: called by the driver after each trial with the trial's nodes and UTC
window; returns the joules and their provenance.

Samples are fetched two periods beyond each edge so that the ones around the edges are
there. Kwollect publishes samples a few seconds late, so the source asks again (every
`poll_s`, up to `lag_s`) until every node with a metric has a sample at or after the
window's end. A node whose samples then cover less than `min_coverage` of the window, or
that has no power metric at all, has NaN joules, and so has the total: the reading carries
a `reason` then. Never 0 for "no data".
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any

from g5k.api import Api
from g5k.kwollect import (
    MIN_COVERAGE,
    NodeEnergy,
    PowerMetric,
    node_metric,
    series,
    window_energy,
)

Choice = tuple[PowerMetric | None, str]  # the node's metric, or None and why


class KwollectNodeEnergy:
    def __init__(self, api: Api, site: str, cluster: str | None = None, lag_s: float = 60,
                 poll_s: float = 5, min_coverage: float = MIN_COVERAGE) -> None:
        self.api, self.site, self.cluster = api, site, cluster
        self.lag_s, self.poll_s, self.min_coverage = lag_s, poll_s, min_coverage
        self._entries: dict[str, list[dict[str, Any]]] = {}

    def node_metrics(self, names: list[str]) -> dict[str, Choice]:
        """Each node's power metric, from its cluster's entries (read once per cluster)."""
        chosen = {}
        for name in names:
            cluster = self.cluster or name.rsplit("-", 1)[0]
            if cluster not in self._entries:
                self._entries[cluster] = self.api.cluster_metrics(self.site, cluster)
            chosen[name] = node_metric(self._entries[cluster], name)
        return chosen

    def __call__(self, nodes: list[str], start: datetime, end: datetime) -> dict[str, Any]:
        names = list(dict.fromkeys(short(n) for n in nodes))
        chosen = self.node_metrics(names)
        deadline = time.monotonic() + self.lag_s
        while True:
            energies = self._read(chosen, start, end)
            late = [e for e in energies.values() if e.metric and (
                e.last_sample_s is None or e.last_sample_s < end.timestamp())]
            if not late or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_s)
        return reading(names, chosen, energies, start, end, self.min_coverage)

    def _read(self, chosen: dict[str, Choice], start: datetime,
              end: datetime) -> dict[str, NodeEnergy]:
        span = (end - start).total_seconds()
        energies = {name: NodeEnergy(name, "", math.nan, 0.0, span, reason=why)
                    for name, (metric, why) in chosen.items() if metric is None}
        for metric in {m for m, _ in chosen.values() if m is not None}:
            group = [name for name, (m, _) in chosen.items() if m == metric]
            margin = timedelta(seconds=metric.max_gap_s)
            samples = self.api.metrics(self.site, group, [metric.name], start - margin,
                                       end + margin)
            points = series(samples, metric.name)
            for name in group:
                energies[name] = window_energy(name, points.get(name, []), metric,
                                               (start, end), self.min_coverage)
        return energies


def reading(names: list[str], chosen: dict[str, Choice], energies: dict[str, NodeEnergy],
            start: datetime, end: datetime, min_coverage: float) -> dict[str, Any]:
    """The node energy source's answer: total joules (NaN as soon as one node's is, with
    the `reason`), their provenance in `meter`, and per node what they stand for."""
    ordered = [energies[n] for n in names]
    per_node = {n: f"{m.name} ({m.method})" if m else "no power metric"
                for n, (m, _) in chosen.items()}
    kinds = set(per_node.values())
    how = kinds.pop() if len(kinds) == 1 else ", ".join(f"{n}: {per_node[n]}" for n in names)
    window = f"{start.isoformat(timespec='seconds')}..{end.isoformat(timespec='seconds')}"
    filled = [f"{e.node}: {e.filled_s:.1f} s ({e.filled_s / e.window_s:.1%}) filled at mean "
              "power" for e in ordered if e.filled_s > 1e-6]
    out: dict[str, Any] = {
        "joules": math.fsum(e.joules for e in ordered),
        "meter": f"Kwollect {how}, whole node(s) {','.join(names)}, {window}"
                 + "".join(f"; {f}" for f in filled),
        "metric": ",".join(sorted({e.metric for e in ordered if e.metric})),
        "metric_by_node": {e.node: e.metric or None for e in ordered},
        "nodes": names, "start_utc": start.isoformat(), "end_utc": end.isoformat(),
        "joules_by_node": {e.node: e.joules for e in ordered},
        "coverage": {e.node: e.coverage for e in ordered},
        "covered_s": {e.node: e.covered_s for e in ordered},
        "uncovered_s": {e.node: max(0.0, e.window_s - e.covered_s) for e in ordered},
        "filled_s": {e.node: e.filled_s for e in ordered},
        "min_coverage": min_coverage}
    reasons = [e.reason for e in ordered if e.reason]
    if reasons:
        out["joules"] = math.nan
        out["reason"] = "; ".join(reasons)
    return out


def short(node: str) -> str:
    """Kwollect's device id of a node: its name without the domain (gros-1)."""
    return node.split(".")[0]
