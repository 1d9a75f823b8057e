"""Tables and plots of a sweep's Pareto front (terminal, CSV, PNG, MLflow artifacts)."""

from __future__ import annotations

import csv
import json
import statistics
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
from sweeper.baseline_compare import BaselineCurve, energy_ratio
from sweeper.fronts import hypervolume_history, non_dominated, round_points
from sweeper.repeats import coefficient_of_variation
from sweeper.space import SearchSpace
from sweeper.tracking import Tracker

RESULT_COLUMNS = ("accuracy", "energy_j", "wall_s", "bytes_total")
UNITS = {"accuracy": "fraction of the test set", "energy_j": "J", "wall_s": "s",
         "bytes_total": "B", "co2_g": "gCO2e", "node_energy_j": "J",
         "energy_to_accuracy_j": "J"}
CI_SUFFIX = "_ci95"


def result_columns(space: SearchSpace) -> list[str]:
    """The result columns of a front row: the usual ones, then any other objective."""
    return [*RESULT_COLUMNS, *(o.metric for o in space.objectives
                               if o.metric not in RESULT_COLUMNS)]


def front_rows(study: optuna.Study, space: SearchSpace, trial_runs: dict[int, str],
               baseline: BaselineCurve | None = None) -> list[dict[str, Any]]:
    """One row per non-dominated trial: its leverages, results (means over repeats, with
    their 95% half-widths `X_ci95` when the space repeats configurations), the ratio of its
    energy to the centralized baseline's at the same accuracy, and its MLflow run id."""
    rows = []
    for trial in sorted(studies.pareto_trials(study), key=lambda t: t.number):
        result = studies.stored_result(trial)
        row: dict[str, Any] = {"trial": trial.number, "feasible": studies.is_feasible(trial)}
        row.update({lev.name: trial.params.get(lev.name) for lev in space.leverages})
        for name in result_columns(space) if result else ():
            row[name] = getattr(result, name)
            if space.repeats > 1:
                row[name + CI_SUFFIX] = result.ci95.get(name, float("nan"))
        if result and space.repeats > 1:
            row["repeats"] = result.repeats
        if result and baseline is not None:
            row["energy_vs_baseline"] = energy_ratio(baseline, result.accuracy,
                                                     result.energy_j)
        row["mlflow_run_id"] = trial_runs.get(trial.number, "")
        rows.append(row)
    return rows


def front_table(rows: list[dict[str, Any]], title: str) -> Table:
    """Rows as a table; a column `X_ci95` is shown inside its column `X` as `mean ± h`."""
    table = Table(title=title)
    columns = [c for c in (rows[0] if rows else ["trial"]) if not c.endswith(CI_SUFFIX)]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) + _fmt_ci(row.get(c + CI_SUFFIX)) for c in columns))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _fmt_ci(half_width: Any) -> str:
    if half_width is None or half_width != half_width:
        return ""
    return f" ± {half_width:.2g}"


def write_front_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plane(space: SearchSpace) -> tuple[str, str]:
    """The two objectives a front is drawn in."""
    if len(space.objectives) > 1:
        return space.objectives[0].metric, space.objectives[1].metric
    return "energy_j", space.objectives[0].metric


def _label(name: str) -> str:
    return f"{name} ({UNITS[name]})" if name in UNITS else name


def _points(study: optuna.Study, space: SearchSpace) -> list[dict[str, Any]]:
    """Every complete trial in the plane of the first two objectives, with intervals."""
    x_name, y_name = _plane(space)
    front = {t.number for t in studies.pareto_trials(study)}
    out = []
    # complete only: a configuration still running its repeats has no values yet
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        result = studies.stored_result(trial)
        if result is not None and result.status == "ok":
            out.append({"trial": trial.number, "front": trial.number in front,
                        "x": getattr(result, x_name), "y": getattr(result, y_name),
                        "x_ci": result.ci95.get(x_name, float("nan")),
                        "y_ci": result.ci95.get(y_name, float("nan")),
                        "kinds": {info.kind for info in result.meters.values()},
                        "params": trial.params})
    return out


def _baseline_xy(space: SearchSpace, baseline: BaselineCurve | None) -> tuple[float, float]:
    """The baseline's final point in the front's plane, where it has both objectives."""
    if baseline is None:
        return float("nan"), float("nan")
    final = {"accuracy": baseline.accuracy_by_epoch[-1],
             "energy_j": baseline.energy_j_by_epoch[-1]}
    x_name, y_name = _plane(space)
    return final.get(x_name, float("nan")), final.get(y_name, float("nan"))


def plot_front(study: optuna.Study, space: SearchSpace, path: Path,
               baseline: BaselineCurve | None = None) -> Path:
    """Every finished trial in the plane of the first two objectives, the front highlighted
    with its 95% intervals, and the centralized baseline where there is one."""
    x_name, y_name = _plane(space)
    points = _points(study, space)
    kinds = set().union(*(p["kinds"] for p in points)) if points else set()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    rest = [p for p in points if not p["front"]]
    ax.scatter([p["x"] for p in rest], [p["y"] for p in rest], c="lightgray", label="trial")
    best = sorted((p for p in points if p["front"]), key=lambda p: p["x"])
    ax.errorbar([p["x"] for p in best], [p["y"] for p in best],
                xerr=[_zero_nan(p["x_ci"]) for p in best],
                yerr=[_zero_nan(p["y_ci"]) for p in best], fmt="o-", c="tab:red",
                capsize=3, label="Pareto front" + (" (mean, 95% CI)" if space.repeats > 1
                                                    else ""))
    bx, by = _baseline_xy(space, baseline)
    if bx == bx and by == by:
        ax.plot([bx], [by], "*", c="tab:blue", markersize=12, label="centralized baseline")
    ax.set_xlabel(_label(x_name))
    ax.set_ylabel(_label(y_name))
    ax.set_title(f"{study.study_name}; energy: {' + '.join(sorted(kinds)) or 'n/a'} "
                 "(meters in run tags)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _zero_nan(value: float) -> float:
    """An interval that does not exist (one repeat) is drawn as none."""
    return 0.0 if value != value else value


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


def plot_html(study: optuna.Study, space: SearchSpace, path: Path,
              baseline: BaselineCurve | None = None) -> Path:
    """The front as an interactive plot (plotly): every trial with its leverages on hover,
    the front with its 95% intervals, the centralized baseline."""
    import plotly.graph_objects as go

    x_name, y_name = _plane(space)
    points = _points(study, space)
    figure = go.Figure()
    for on_front, style in ((False, {"color": "gray"}), (True, {"color": "crimson"})):
        chosen = sorted((p for p in points if p["front"] == on_front), key=lambda p: p["x"])
        figure.add_trace(go.Scatter(
            x=[p["x"] for p in chosen], y=[p["y"] for p in chosen],
            mode="markers+lines" if on_front else "markers", marker={**style, "size": 9},
            name="Pareto front" if on_front else "other trials",
            error_x={"type": "data", "array": [_zero_nan(p["x_ci"]) for p in chosen],
                     "visible": on_front},
            error_y={"type": "data", "array": [_zero_nan(p["y_ci"]) for p in chosen],
                     "visible": on_front},
            text=[f"trial {p['trial']}<br>" + "<br>".join(f"{k}={_fmt(v)}" for k, v in
                                                          p["params"].items())
                  for p in chosen], hoverinfo="text+x+y"))
    bx, by = _baseline_xy(space, baseline)
    if bx == bx and by == by:
        figure.add_trace(go.Scatter(x=[bx], y=[by], mode="markers", name="centralized baseline",
                                    marker={"symbol": "star", "size": 14, "color": "royalblue"},
                                    text=[f"baseline run {baseline.run_id}"]))
    figure.update_layout(title=study.study_name, xaxis_title=_label(x_name),
                         yaxis_title=_label(y_name), template="plotly_white")
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


def energy_cv_median(study: optuna.Study) -> float:
    """The median, over configurations with two or more ok repeats, of the coefficient of
    variation of energy_j across their repeats (NaN when there is none)."""
    cvs = []
    for trial in study.get_trials(deepcopy=False):
        results = [r for r in studies.stored_repeats(trial).values() if r.status == "ok"]
        cv = coefficient_of_variation([r.energy_j for r in results])
        if cv == cv:
            cvs.append(cv)
    return statistics.median(cvs) if cvs else float("nan")


def publish(study: optuna.Study, space: SearchSpace, tracker: Tracker, parent_run_id: str,
            rows: list[dict[str, Any]], baseline: BaselineCurve | None = None
            ) -> dict[str, Any]:
    """Front, anytime front, hypervolume history and importances as artifacts of the
    sweep's parent run; returns the last three for the terminal."""
    extras = {"round_front": round_front_rows(study), "hypervolume": hypervolume_rows(
        study, space), "importances": importances(study, space)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [write_front_csv(rows, folder / "pareto.csv"),
                 plot_front(study, space, folder / "pareto.png", baseline),
                 plot_html(study, space, folder / "pareto.html", baseline),
                 write_rows_csv(extras["round_front"], folder / "pareto_rounds.csv"),
                 write_rows_csv(extras["hypervolume"], folder / "hypervolume.csv"),
                 plot_hypervolume(extras["hypervolume"], folder / "hypervolume.png")]
        (folder / "importances.json").write_text(json.dumps(extras["importances"], indent=1))
        files.append(folder / "importances.json")
        for path in files:
            tracker.log_sweep_file(parent_run_id, path)
    return extras
