"""Repeats of one configuration: seeds, and the mean and 95% interval of each objective.

With `budget.repeats: N` every configuration Optuna proposes runs N times, repeat r with
seed `scenario.seed + r` (another partition, initial model, client sampling and batch
order). Optuna is told the means; the spread is kept beside them, so a front point says
how far its energy and accuracy move with the seed alone.
"""

from __future__ import annotations

import math
import statistics

from scipy import stats

from sweeper.result import OBJECTIVE_METRICS, RoundRecord, TrialResult

SUMMARY_FIELDS = ("accuracy", "energy_j", "wall_s", "bytes_total", "co2_g")


def ci95_half_width(values: list[float]) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean (NaN below 2
    values or with a NaN among them)."""
    if len(values) < 2 or any(math.isnan(v) for v in values):
        return float("nan")
    return float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values)
                 / math.sqrt(len(values)))


def coefficient_of_variation(values: list[float]) -> float:
    """Sample standard deviation over the mean (NaN below 2 values or a zero mean)."""
    if len(values) < 2 or any(math.isnan(v) for v in values) or statistics.mean(values) == 0:
        return float("nan")
    return statistics.stdev(values) / abs(statistics.mean(values))


def _mean(values: list[float]) -> float:
    return float("nan") if any(math.isnan(v) for v in values) else statistics.fmean(values)


def _mean_rounds(results: list[TrialResult]) -> list[RoundRecord]:
    """Round by round means, over the rounds every repeat ran."""
    out = []
    for records in zip(*(r.rounds for r in results), strict=False):
        components = set().union(*(rec.energy for rec in records))
        out.append(RoundRecord(
            records[0].round, _mean([r.accuracy for r in records]),
            _mean([r.loss for r in records]),
            round(statistics.fmean(r.bytes_up for r in records)),
            round(statistics.fmean(r.bytes_down for r in records)),
            _mean([r.wall_s for r in records]), _mean([r.energy_j for r in records]),
            {c: _mean([rec.energy.get(c, float("nan")) for rec in records])
             for c in sorted(components)},
            _mean([r.client_accuracy for r in records]),
            round(statistics.fmean(r.examples_used for r in records))))
    return out


def aggregate(results: list[TrialResult], seeds: list[int]) -> TrialResult:
    """One configuration's result from its repeats (in repeat order): a failed repeat fails
    it, else a diverged one makes it diverged, else a pruned one prunes it; objectives are
    means, with 95% half-widths."""
    if len(results) == 1:
        return results[0]
    per_repeat = [{"seed": seed, "status": r.status, "reason": r.reason,
                   **{name: r.objective(name) for name in OBJECTIVE_METRICS}}
                  for seed, r in zip(seeds, results, strict=True)]
    for status in ("failed", "diverged", "pruned"):
        bad = [(seed, r) for seed, r in zip(seeds, results, strict=True) if r.status == status]
        if bad:
            seed, first = bad[0]
            return TrialResult(status=status, reason=f"repeat with seed {seed}: {first.reason}",
                               repeats=len(results), meters=first.meters,
                               energy_j=_spent_sum(results),
                               info={"repeats": per_repeat, "spent_j": _spent_sum(results)})
    out = TrialResult(rounds=_mean_rounds(results), meters=results[0].meters,
                      repeats=len(results),
                      info={"repeats": per_repeat, "spent_j": _spent_sum(results),
                            "seeds": list(seeds)})
    for name in OBJECTIVE_METRICS:
        values = [r.objective(name) for r in results]
        setattr(out, name, _mean(values))
        out.ci95[name] = ci95_half_width(values)
    return out


def _spent_sum(results: list[TrialResult]) -> float:
    return sum(spent_j(r) for r in results if not math.isnan(spent_j(r)))


def spent_j(result: TrialResult) -> float:
    """Joules a finished configuration (all its repeats) used, whatever its status."""
    return float(result.info.get("spent_j", result.energy_j))
