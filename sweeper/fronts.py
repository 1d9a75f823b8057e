"""Pareto fronts and hypervolume of a sweep: trial-level and round-level ("anytime")."""

from __future__ import annotations

from dataclasses import dataclass

import moocore
import numpy as np

from sweeper.result import TrialResult


@dataclass(frozen=True)
class Point:
    trial: int
    round: int | None  # None: the trial's final result
    values: tuple[float, ...]  # in the order of the objectives


def non_dominated(points: list[Point], maximize: list[bool]) -> list[Point]:
    """The points no other point is at least as good as on every objective and better on
    one (ties are kept)."""
    if not points:
        return []
    signs = np.array([-1.0 if m else 1.0 for m in maximize])  # to minimization
    values = np.array([p.values for p in points], dtype=float) * signs
    keep = []
    for i, v in enumerate(values):
        dominated = np.any(np.all(values <= v, axis=1) & np.any(values < v, axis=1))
        if not dominated:
            keep.append(points[i])
    return keep


def round_points(results: dict[int, TrialResult]) -> list[Point]:
    """Every round of every trial as a candidate: (accuracy then, energy so far)."""
    return [Point(number, r.round, (r.accuracy, r.energy_j))
            for number, result in sorted(results.items()) for r in result.rounds]


def reference_point(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """The nadir of the points, pushed 10% of each objective's range outward (or by 1 when
    the range is 0): a fixed reference for a sweep's hypervolume history, so that every
    point, extremes included, contributes."""
    worst = np.where(maximize, values.min(axis=0), values.max(axis=0))
    span = values.max(axis=0) - values.min(axis=0)
    margin = np.where(span > 0, 0.1 * span, 1.0)
    return np.where(maximize, worst - margin, worst + margin)


def hypervolume(values: np.ndarray, maximize: list[bool], ref: np.ndarray) -> float:
    """Hypervolume dominated by `values` w.r.t. `ref` (moocore, exact)."""
    if len(values) == 0:
        return 0.0
    return float(moocore.hypervolume(values, ref=ref, maximise=maximize))


def hypervolume_history(values_in_order: list[tuple[float, ...]],
                        maximize: list[bool]) -> list[float]:
    """Hypervolume after each finished trial, against the reference of all of them."""
    if not values_in_order:
        return []
    values = np.array(values_in_order, dtype=float)
    ref = reference_point(values, maximize)
    return [hypervolume(values[: i + 1], maximize, ref) for i in range(len(values))]


@dataclass(frozen=True)
class PruneRule:
    """Stop a trial that cannot reach the (accuracy max, energy min) front.

    Sound under one assumption, stated by the user: no trial's final accuracy exceeds
    `max_accuracy` (e.g. the centralized baseline's). Energy only grows with rounds, so a
    trial whose energy so far already reaches that of a front point whose accuracy is at
    least `max_accuracy` ends dominated (or tied) whatever its remaining rounds do."""

    max_accuracy: float
    front: tuple[tuple[float, float], ...]  # (accuracy, energy_j) of the front at launch

    def reason(self, energy_so_far: float) -> str | None:
        for accuracy, energy in self.front:
            if accuracy >= self.max_accuracy and energy <= energy_so_far:
                return (f"pruned: {energy_so_far:.4g} J already >= {energy:.4g} J of a front "
                        f"point with accuracy {accuracy:.4g} >= max_accuracy "
                        f"{self.max_accuracy:g}")
        return None
