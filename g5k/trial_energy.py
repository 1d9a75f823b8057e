"""Whole-node joules of a trial from Kwollect: the power of the node(s) it ran on, over its
time window, integrated (trapezoid, see `g5k.kwollect`). A *node energy source* for
`sweeper.orchestrate.run_sweep` in `isolation: node` mode: called by the driver after each
trial with the trial's nodes and UTC window; returns the joules and their provenance.

The window is integrated exactly: samples are fetched `max_gap_s` beyond each edge and the
power at an edge is interpolated between the samples around it. Kwollect publishes samples
a few seconds late, so the source asks again (every `poll_s`, up to `lag_s`) until every
node has a sample at or after the window's end; what is still missing then is reported as
uncovered time (`covered_s` + `uncovered_s` per node), not guessed.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from g5k import G5kError
from g5k.api import Api
from g5k.kwollect import NodeEnergy, choose_power_metric, integrate


class KwollectNodeEnergy:
    def __init__(self, api: Api, site: str, cluster: str | None = None, lag_s: float = 60,
                 poll_s: float = 5, max_gap_s: float = 5) -> None:
        self.api, self.site, self.cluster = api, site, cluster
        self.lag_s, self.poll_s, self.max_gap_s = lag_s, poll_s, max_gap_s
        self._metric: str | None = None

    def metric(self, nodes: list[str]) -> str:
        """The cluster's best power metric, read once from the reference API."""
        if self._metric is None:
            cluster = self.cluster or short(nodes[0]).rsplit("-", 1)[0]
            found = choose_power_metric(self.api.cluster_metrics(self.site, cluster))
            if found is None:
                raise G5kError(f"cluster {cluster} of {self.site} offers no node power metric "
                               "in Kwollect: use isolation: shared, or a cluster with "
                               "wattmeters (see g5k/README.md)")
            self._metric = found
        return self._metric

    def __call__(self, nodes: list[str], start: datetime, end: datetime) -> dict[str, Any]:
        metric = self.metric(nodes)
        names = [short(n) for n in nodes]
        deadline = time.monotonic() + self.lag_s
        while True:
            margin = timedelta(seconds=self.max_gap_s)  # the samples around each edge
            samples = self.api.metrics(self.site, names, [metric], start - margin,
                                       end + margin)
            energy = integrate(samples, metric, self.max_gap_s, window=(start, end))
            if self._complete(energy, names, end) or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_s)
        window = f"{start.isoformat(timespec='seconds')}..{end.isoformat(timespec='seconds')}"
        covered = {n: energy.covered_s.get(n, 0.0) for n in names}
        span = (end - start).total_seconds()
        return {"joules": energy.total_j,
                "meter": f"Kwollect {metric}, whole node(s) {','.join(names)}, {window}, "
                         "trapezoid",
                "metric": metric, "nodes": names, "start_utc": start.isoformat(),
                "end_utc": end.isoformat(), "joules_by_node": dict(energy.joules),
                "covered_s": covered,
                "uncovered_s": {n: max(0.0, span - c) for n, c in covered.items()}}

    def _complete(self, energy: NodeEnergy, names: list[str], end: datetime) -> bool:
        return all(energy.last_sample_s.get(n, float("-inf")) >= end.timestamp()
                   for n in names)


def short(node: str) -> str:
    """Kwollect's device id of a node: its name without the domain (gros-1)."""
    return node.split(".")[0]
