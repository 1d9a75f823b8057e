"""Federated points read against the centralized baseline: how many times the baseline's
energy a federated point spent for an accuracy the baseline also reached (Qiu et al., JMLR
2023, ask the same of federated vs centralized training)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sweeper.tracking import ROLE_TAG

KIND_TAG_PREFIX = "sweeper.meter_kind."


@dataclass(frozen=True)
class BaselineCurve:
    run_id: str
    accuracy_by_epoch: tuple[float, ...]  # index 0 is epoch 1
    energy_j_by_epoch: tuple[float, ...]  # cumulative
    kind: str  # "measured" | "modeled" | "measured + modeled"


def load_baseline(tracking_uri: str, space_name: str,
                  scenario: dict[str, Any]) -> BaselineCurve | None:
    """The newest FINISHED baseline run whose `scenario.*` params are exactly `scenario`
    (values compared as the strings MLflow stores): from experiment `<space_name>-baselines`
    first, else from any `*-baselines` experiment of the store (the same scenario's baseline
    run under another space, e.g. quick.yaml's for repeats.yaml); or None. Runs logged
    before baselines had energy (no `energy_j`) are skipped."""
    client = MlflowClient(tracking_uri=tracking_uri)
    own = f"{space_name}-baselines"
    experiments = sorted(client.search_experiments(filter_string="name LIKE '%-baselines'"),
                         key=lambda e: e.name != own)
    wanted = {k: str(v) for k, v in scenario.items()}
    for experiment in experiments:
        run = _newest_of_scenario(client, experiment.experiment_id, wanted)
        if run is not None:
            return _curve(client, run)
    return None


def _newest_of_scenario(client: MlflowClient, experiment_id: str,
                        wanted: dict[str, str]) -> Run | None:
    """The newest FINISHED baseline run of the experiment with `wanted` as its scenario
    and an `energy_j`, or None."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            f"attributes.status = 'FINISHED' and tags.`{ROLE_TAG}` = 'baseline'",
            order_by=["attributes.start_time DESC"], page_token=token)
        for run in page:
            if _scenario_of(run) == wanted and "energy_j" in run.data.metrics:
                return run
        token = page.token
        if not token:
            return None


def energy_ratio(curve: BaselineCurve, accuracy: float, energy_j: float) -> float:
    """A federated point's energy over the baseline's cumulative energy at the first epoch
    whose accuracy reaches `accuracy`; NaN if no epoch does (or an energy is not positive
    and finite: the ratio is never 0 or inf)."""
    for reached, baseline_j in zip(curve.accuracy_by_epoch, curve.energy_j_by_epoch,
                                   strict=True):
        if reached >= accuracy:
            ratio = energy_j / baseline_j if baseline_j > 0 else math.nan
            return ratio if math.isfinite(ratio) and ratio > 0 else math.nan
    return math.nan


def _scenario_of(run: Run) -> dict[str, str]:
    prefix = "scenario."
    return {k[len(prefix):]: v for k, v in run.data.params.items() if k.startswith(prefix)}


def _curve(client: MlflowClient, run: Run) -> BaselineCurve:
    run_id = run.info.run_id
    kinds = sorted({v for k, v in run.data.tags.items() if k.startswith(KIND_TAG_PREFIX)})
    return BaselineCurve(run_id, _history(client, run_id, "accuracy"),
                         _history(client, run_id, "energy_j"), " + ".join(kinds))


def _history(client: MlflowClient, run_id: str, key: str) -> tuple[float, ...]:
    """A metric's values by step (epoch), the last logged value of a step winning."""
    by_step = {m.step: m.value for m in sorted(client.get_metric_history(run_id, key),
                                               key=lambda m: (m.step, m.timestamp))}
    return tuple(by_step[step] for step in sorted(by_step))
