"""Tables and plots of a sweep's Pareto front (terminal, CSV, PNG, MLflow artifacts)."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from rich.table import Table

from sweeper import study as studies
from sweeper.space import SearchSpace
from sweeper.tracking import Tracker

RESULT_COLUMNS = ("accuracy", "energy_j", "wall_s", "bytes_total")


def front_rows(study: optuna.Study, space: SearchSpace,
               trial_runs: dict[int, str]) -> list[dict[str, Any]]:
    """One row per non-dominated trial: its leverages, results and MLflow run id."""
    rows = []
    for trial in sorted(studies.pareto_trials(study), key=lambda t: t.number):
        result = studies.stored_result(trial)
        row: dict[str, Any] = {"trial": trial.number}
        row.update({lev.name: trial.params.get(lev.name) for lev in space.leverages})
        row.update({name: getattr(result, name) for name in RESULT_COLUMNS} if result else {})
        row["mlflow_run_id"] = trial_runs.get(trial.number, "")
        rows.append(row)
    return rows


def front_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    columns = list(rows[0]) if rows else ["trial"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in columns))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_front_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_front(study: optuna.Study, space: SearchSpace, path: Path) -> Path:
    """Every finished trial in the plane of the first two objectives, the front highlighted."""
    x_name, y_name = (o.metric for o in space.objectives[:2]) if len(
        space.objectives) > 1 else ("energy_j", space.objectives[0].metric)
    points, front = [], {t.number for t in studies.pareto_trials(study)}
    kinds: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        result = studies.stored_result(trial)
        if result is not None and result.status == "ok":
            points.append((getattr(result, x_name), getattr(result, y_name),
                           trial.number in front))
            kinds |= {info.kind for info in result.meters.values()}
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.scatter([p[0] for p in points if not p[2]], [p[1] for p in points if not p[2]],
               c="lightgray", label="trial")
    best = sorted((p for p in points if p[2]), key=lambda p: p[0])
    ax.plot([p[0] for p in best], [p[1] for p in best], "o-", c="tab:red", label="Pareto front")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(f"{study.study_name}; energy: {' + '.join(sorted(kinds)) or 'n/a'} "
                 "(meters in run tags)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def publish(study: optuna.Study, space: SearchSpace, tracker: Tracker, parent_run_id: str,
            rows: list[dict[str, Any]]) -> None:
    """The front as pareto.csv and pareto.png artifacts of the sweep's parent run."""
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_sweep_file(parent_run_id, write_front_csv(rows, Path(tmp) / "pareto.csv"))
        tracker.log_sweep_file(parent_run_id, plot_front(study, space, Path(tmp) / "pareto.png"))
