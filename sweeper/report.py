"""Tables and plots of a sweep's Pareto front (terminal, CSV, PNG, MLflow artifacts)."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import statistics
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from rich.console import Group, RenderableType
from rich.text import Text

from sweeper import study as studies
from sweeper.baseline_compare import BaselineCurve, energy_ratio
from sweeper.fronts import hypervolume_history, non_dominated, round_points
from sweeper.live import FittedTable, fmt
from sweeper.repeats import coefficient_of_variation
from sweeper.result import MeterInfo
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


TERMINAL_HIDDEN = ("feasible", "mlflow_run_id")  # in pareto.csv; not in the terminal table


def front_table(rows: list[dict[str, Any]], title: str) -> RenderableType:
    """Rows as a table under its title; a column `X_ci95` is shown inside its column `X`
    as `mean ± h`. Run ids are left out (`run_id_lines` prints them whole, where a table
    column would wrap them), and so is `feasible` (a front's rows are the feasible trials)."""
    columns = [c for c in (rows[0] if rows else ["trial"])
               if not c.endswith(CI_SUFFIX) and c not in TERMINAL_HIDDEN]
    numeric = {c for c in columns for row in rows
               if isinstance(row.get(c), int | float) and not isinstance(row.get(c), bool)}
    cells = [[_fmt(row.get(c)) + _fmt_ci(row.get(c + CI_SUFFIX)) for c in columns]
             for row in rows]
    return Group(Text(title, style="bold"), FittedTable(columns, cells, right=numeric))


def run_id_lines(rows: list[dict[str, Any]]) -> list[str]:
    """`trial N: MLflow run ID`, one line per row that has a run, ids never wrapped."""
    return [f"  trial {row['trial']}: MLflow run {row['mlflow_run_id']}" for row in rows
            if row.get("mlflow_run_id")]


def _fmt(value: Any) -> str:
    return fmt(value)


def _fmt_ci(half_width: Any) -> str:
    if half_width is None or half_width != half_width:
        return ""
    return f" ± {fmt(half_width)}"


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


def _label(name: str, provenance: str = "") -> str:
    """`energy_j (J, modeled: laptop, wifi)`: the unit, and where the values came from."""
    inside = ", ".join(p for p in (UNITS.get(name, ""), provenance) if p)
    return f"{name} ({inside})" if inside else name


# the meters that are not components of a trial's energy_j
OTHER_METERS = ("co2_g", "node_energy_j", "spent_j")


def provenance(name: str, meters: list[dict[str, MeterInfo]]) -> str:
    """Where the values of objective `name` came from, in short, over the points' meters:
    `modeled: laptop, wifi` (the profiles), `measured: rapl; modeled: wifi` (the counters);
    "" for what no meter makes (accuracy, time, bytes). The meters in full are the child
    runs' `sweeper.meter.*` tags."""
    if name in ("energy_j", "energy_to_accuracy_j"):
        infos = [info for m in meters for c, info in m.items() if c not in OTHER_METERS]
    elif name in ("node_energy_j", "co2_g"):
        infos = [m[name] for m in meters if name in m]
    else:
        return ""
    by_kind: dict[str, list[str]] = {}
    for info in infos:
        if info.kind == "modeled":  # "process_cpu_time x host 'laptop' (...)"
            found = re.findall(r"'([^']+)'", info.meter) or re.findall(r"\(([^;)]+)",
                                                                       info.meter)[:1]
        else:  # "rapl, windowed around ...", "zeus: idle power ..."
            found = [re.split(r"[,:(]", info.meter)[0].strip()[:40]]
        names = by_kind.setdefault(info.kind, [])
        names += [n for n in found if n not in names]
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in sorted(by_kind.items()))


def axis_labels(points: list[dict[str, Any]], space: SearchSpace) -> tuple[str, str]:
    """The x and y labels of the front's plane, with units and provenance."""
    meters = [p["meters"] for p in points]
    x_name, y_name = _plane(space)
    return _label(x_name, provenance(x_name, meters)), _label(y_name, provenance(y_name, meters))


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
                        "meters": result.meters,
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
    points = _points(study, space)
    kinds = set().union(*(p["kinds"] for p in points)) if points else set()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    rest = [p for p in points if not p["front"]]
    ax.scatter([p["x"] for p in rest], [p["y"] for p in rest], c="tab:gray", alpha=0.6,
               label="other trials", zorder=2)
    best = sorted((p for p in points if p["front"]), key=lambda p: p["x"])
    ax.errorbar([p["x"] for p in best], [p["y"] for p in best],
                xerr=[_zero_nan(p["x_ci"]) for p in best],
                yerr=[_zero_nan(p["y_ci"]) for p in best], fmt="o-", c="tab:red",
                markersize=7, capsize=3, zorder=3,
                label="Pareto front" + (" (mean, 95% CI)" if space.repeats > 1 else ""))
    for p in best:
        ax.annotate(str(p["trial"]), (p["x"], p["y"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8, color="tab:red")
    bx, by = _baseline_xy(space, baseline)
    if bx == bx and by == by:
        ax.plot([bx], [by], "*", c="tab:blue", markersize=12, label="centralized baseline")
    x_label, y_label = axis_labels(points, space)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(f"{study.study_name}; energy: {' + '.join(sorted(kinds)) or 'n/a'} "
                 "(meters in the trial runs' tags)", fontsize=9)
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


def varied_leverages(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """The leverages every trial has and that took two or more values across them: the only
    ones an importance means anything for (a constant one gets the estimator's noise)."""
    if not trials:
        return []
    names = set.intersection(*(set(t.params) for t in trials))
    return sorted(name for name in names
                  if len({repr(t.params[name]) for t in trials}) > 1)


def importances(study: optuna.Study, space: SearchSpace) -> dict[str, dict[str, float]]:
    """Leverage importances per objective (Optuna's default importance evaluator), over
    the leverages that varied across the complete trials (`varied_leverages`)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    varied = varied_leverages(complete)
    out: dict[str, dict[str, float]] = {}
    for i, objective in enumerate(space.objectives):
        if not varied:
            out[objective.metric] = {}
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "few trials" notices
                out[objective.metric] = dict(optuna.importance.get_param_importances(
                    study, params=varied, target=lambda t, i=i: t.values[i]))
        except (RuntimeError, ValueError):  # e.g. a leverage with a single value sampled
            out[objective.metric] = {}
    return out


def plot_html(study: optuna.Study, space: SearchSpace, path: Path,
              baseline: BaselineCurve | None = None,
              shared: SharedPlotly | None = None) -> Path:
    """The front as an interactive plot (plotly): every trial with its leverages on hover,
    the front with its 95% intervals, the centralized baseline. With `shared`, the page
    loads the store's plotly.js (a page of ~10 kB, not 4.7 MB); without, it embeds it."""
    import plotly.graph_objects as go

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
    x_label, y_label = axis_labels(points, space)
    figure.update_layout(title=study.study_name, xaxis_title=x_label, yaxis_title=y_label,
                         template="plotly_white")
    if shared is None:
        figure.write_html(str(path), include_plotlyjs=True)
    else:
        path.write_text(shared.page(f"{study.study_name}: Pareto front", figure.to_json()))
    return path


@dataclass(frozen=True)
class SharedPlotly:
    """plotly.js kept once per store (`Tracker.shared_file`), for pages that load it."""

    run_id: str  # the run holding it
    relative: str | None  # its path from the page's folder (None: not on this machine)
    name: str  # plotly-<version>.min.mjs: MLflow serves .mjs as text/javascript

    def page(self, title: str, figure_json: str) -> str:
        """A page drawing `figure_json` once plotly.js is loaded: from the page's folder
        when opened there; from the MLflow server inside MLflow's UI, which shows an HTML
        artifact as a `blob:` page in a sandboxed frame, where no relative path resolves
        (and serves `.js` artifacts as text/plain, which browsers refuse to run: hence
        `.mjs`); else a line saying where it was looked for."""
        served = f"/get-artifact?path={quote(self.name)}&run_uuid={quote(self.run_id)}"
        missing = (f"plotly.js not found ({self.relative or self.name} of the MLflow run "
                   f"{self.run_id}): open this page in the MLflow UI or from the store's "
                   "artifacts folder.")
        return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8" /><title>{html.escape(title)}</title></head>
<body><div id="plot" style="height: 90vh; min-height: 450px"></div>
<script>
const figure = {figure_json};
const sources = location.protocol === "blob:"
  ? [new URL(location.href).origin + {json.dumps(served)}] : {json.dumps([self.relative or ""])};
function load(rest) {{
  if (typeof Plotly !== "undefined") {{
    Plotly.newPlot("plot", figure.data, figure.layout, {{responsive: true}});
  }} else if (rest.length && rest[0]) {{
    const script = document.createElement("script");
    script.src = rest[0];
    script.onload = () => load([]);
    script.onerror = () => load(rest.slice(1));
    document.head.appendChild(script);
  }} else {{
    document.getElementById("plot").textContent = {json.dumps(missing)};
  }}
}}
load(sources);
</script></body></html>
"""


def shared_plotly(tracker: Tracker, parent_run_id: str) -> SharedPlotly:
    """plotly.js in the store (written the first time), as the sweep's pages find it."""
    import plotly
    from plotly.offline import get_plotlyjs_version

    name = f"plotly-{get_plotlyjs_version()}.min.mjs"
    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    run_id = tracker.shared_file(name, lambda path: shutil.copyfile(source, path))
    here, there = tracker.artifact_folder(parent_run_id), tracker.artifact_folder(run_id)
    relative = (Path(os.path.relpath(there / name, here)).as_posix()
                if here is not None and there is not None else None)
    return SharedPlotly(run_id, relative, name)


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
                 plot_html(study, space, folder / "pareto.html", baseline,
                           shared_plotly(tracker, parent_run_id)),
                 write_rows_csv(extras["round_front"], folder / "pareto_rounds.csv"),
                 write_rows_csv(extras["hypervolume"], folder / "hypervolume.csv"),
                 plot_hypervolume(extras["hypervolume"], folder / "hypervolume.png")]
        (folder / "importances.json").write_text(json.dumps(extras["importances"], indent=1))
        files.append(folder / "importances.json")
        for path in files:
            tracker.log_sweep_file(parent_run_id, path)
    return extras
