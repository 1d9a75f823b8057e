"""Tables and plots of a sweep's Pareto front (terminal, CSV, PNG, MLflow artifacts)."""

from __future__ import annotations

import csv
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from rich.table import Table

from sweeper import study as studies
from sweeper.fronts import hypervolume_history, non_dominated, round_points
from sweeper.space import SearchSpace
from sweeper.tracking import Tracker

RESULT_COLUMNS = ("accuracy", "energy_j", "wall_s", "bytes_total")


def front_rows(study: optuna.Study, space: SearchSpace,
               trial_runs: dict[int, str]) -> list[dict[str, Any]]:
    """One row per non-dominated trial: its leverages, results and MLflow run id."""
    rows = []
    for trial in sorted(studies.pareto_trials(study), key=lambda t: t.number):
        result = studies.stored_result(trial)
        row: dict[str, Any] = {"trial": trial.number, "feasible": studies.is_feasible(trial)}
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


def finished_results(study: optuna.Study) -> dict[int, Any]:
    """Trial number -> TrialResult of every complete trial, in order."""
    out = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        result = studies.stored_result(trial)
        if result is not None:
            out[trial.number] = result
    return out


def hypervolume_rows(study: optuna.Study, space: SearchSpace) -> list[dict[str, Any]]:
    """Hypervolume of the feasible complete trials after each one finished."""
    maximize = [o.direction == "maximize" for o in space.objectives]
    trials = [t for t in study.get_trials(deepcopy=False,
                                          states=(optuna.trial.TrialState.COMPLETE,))
              if studies.is_feasible(t)]
    history = hypervolume_history([tuple(t.values) for t in trials], maximize)
    return [{"trial": t.number, "hypervolume": hv} for t, hv in zip(trials, history,
                                                                      strict=True)]


def round_front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The anytime front: every round of every trial, (accuracy then, energy so far)."""
    front = non_dominated(round_points(finished_results(study)), [True, False])
    return [{"trial": p.trial, "round": p.round, "accuracy": p.values[0],
             "energy_j": p.values[1]} for p in sorted(front, key=lambda p: p.values[1])]


def importances(study: optuna.Study, space: SearchSpace) -> dict[str, dict[str, float]]:
    """Leverage importances per objective (Optuna's default importance evaluator)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    out = {}
    for i, objective in enumerate(space.objectives):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "few trials" notices
                out[objective.metric] = dict(optuna.importance.get_param_importances(
                    study, target=lambda t, i=i: t.values[i]))
        except (RuntimeError, ValueError):  # e.g. a leverage with a single value sampled
            out[objective.metric] = {}
    return out


def plot_html(study: optuna.Study, space: SearchSpace, path: Path) -> Path:
    """An interactive Pareto plot (plotly via optuna.visualization)."""
    names = [o.metric for o in space.objectives]
    figure = optuna.visualization.plot_pareto_front(
        study, target_names=names,
        constraints_func=None) if len(names) in (2, 3) else None
    if figure is None:
        path.write_text("<p>the interactive front needs 2 or 3 objectives</p>")
    else:
        figure.write_html(str(path), include_plotlyjs=True)
    return path


def plot_hypervolume(rows: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([r["trial"] for r in rows], [r["hypervolume"] for r in rows], "o-")
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume (objective units)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_rows_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    return write_front_csv(rows, path)


def publish(study: optuna.Study, space: SearchSpace, tracker: Tracker, parent_run_id: str,
            rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Front, anytime front, hypervolume history and importances as artifacts of the
    sweep's parent run; returns the last three for the terminal."""
    extras = {"round_front": round_front_rows(study), "hypervolume": hypervolume_rows(
        study, space), "importances": importances(study, space)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [write_front_csv(rows, folder / "pareto.csv"),
                 plot_front(study, space, folder / "pareto.png"),
                 plot_html(study, space, folder / "pareto.html"),
                 write_rows_csv(extras["round_front"], folder / "pareto_rounds.csv"),
                 write_rows_csv(extras["hypervolume"], folder / "hypervolume.csv"),
                 plot_hypervolume(extras["hypervolume"], folder / "hypervolume.png")]
        (folder / "importances.json").write_text(json.dumps(extras["importances"], indent=1))
        files.append(folder / "importances.json")
        for path in files:
            tracker.log_sweep_file(parent_run_id, path)
    return extras
