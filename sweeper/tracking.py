"""MLflow: one experiment and parent run per sweep, one child run per trial.

Only the sweep's driver writes here. Every metric name carries its unit; energy metrics say
which path (measured/modeled) produced them; the meters are tags of the child run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeper import artifact_store
from sweeper import study as studies
from sweeper.config import LEVERAGES, TrialConfig, inapplicable
from sweeper.environment import differences, git_state, installed_packages, sweep_environment
from sweeper.errors import StoreError
from sweeper.fronts import hypervolume_history
from sweeper.names import file_safe
from sweeper.result import OUTSIDE_SPACE, MeterInfo, TrialResult
from sweeper.space import SearchSpace
from sweeper.store_errors import describe
from sweeper.store_lock import store_lock

if TYPE_CHECKING:  # the baseline imports torch and Flower; the driver needs neither here
    from sweeper.baseline import BaselineResult

TRIAL_TAG = "sweeper.trial"
CONFIG_TAG = "sweeper.config"  # the Optuna trial number every repeat of it carries
REPEAT_TAG = "sweeper.repeat"
ROLE_TAG = "sweeper.role"
CONFIG_ARTIFACT = "trial_config.json"
ENV_PREFIX = "sweeper.env."  # the software of a sweep's driver, on the sweep's run
MACHINE_PREFIX = "sweeper.machine."  # the machine of a trial, on its child run
RAN_ELSEWHERE_TAG = "sweeper.ran_elsewhere"  # how a re-run's environment differed
REPORT_TAG = "sweeper.report"  # "failed: <why>" when the sweep's final report failed
SEARCHED_TAG = "sweeper.searched"  # the leverages the space varies, comma-separated
CONDITIONS_TAG = "sweeper.conditions"  # JSON: leverage -> its `when:` (space conditionals)
NOTE_TAG = "mlflow.note.content"  # the description MLflow shows on an experiment or a run
# MLflow's experiment kind; 3.17's UI offers the kind selector on it but opens an experiment
# in the view its `workflowType` URL parameter names (see `ui_url`)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
SHARED_EXPERIMENT = "sweeper-shared-files"  # one run: files a store's sweeps share

# Every metric a trial's child run carries, with its unit. Series are logged with step =
# round: `round/` holds what that round alone did, `cumulative/` what rounds 1..r did
# together; `final.` is the whole trial (step 0).
TRIAL_METRICS = {
    "round/accuracy": "fraction of the test set the global model gets right after the round",
    "round/loss": "mean cross-entropy of the global model on the test set after the round",
    "round/client_accuracy": "fraction of the clients' held-out data, global model",
    "round/bytes_up": "B, clients to server, this round (payload, or on the wire)",
    "round/bytes_down": "B, server to clients, this round",
    "round/wall_s": "s, the round's wall time",
    "round/examples_used": "count of training examples touched this round, all clients",
    "cumulative/energy_j": "J, rounds 1..r, every component",
    "cumulative/energy_<kind>.<component>_j": "J, rounds 1..r, one component; kind: "
                                              "measured or modeled (meter in the run's tags)",
    "final.accuracy": "fraction of the test set, after the last round",
    "final.energy_j": "J, whole trial",
    "final.co2_g": "gCO2e, final.energy_j x the carbon region's intensity",
    "final.wall_s": "s, the federation's wall time",
    "final.bytes_total": "B, up and down, every round",
    "final.node_energy_j": "J, whole node(s) over the trial's window (node energy source)",
    "final.energy_to_accuracy_j": "J, until the first round reaching target_accuracy",
    "final.warmup_cpu_s": "CPU s, the warm-up run before any meter counted (it holds the "
                          "process's cold start, if the trial had it); in no joules",
    "failed.spent_j": "J, what a failed trial used until it failed (modeled)",
}
SWEEP_METRICS = {  # the sweep's parent run, step = configurations finished
    "sweep/hypervolume": "product of the objectives' units, feasible complete trials, "
                         "against their nadir pushed 10% outward (see hypervolume.csv)",
    "sweep/front_size": "count of Pareto-optimal feasible trials",
    "sweep/trials_done": "count of configurations finished (complete, failed, pruned)",
    "sweep/trials_complete": "count", "sweep/trials_failed": "count (diverged included)",
    "sweep/trials_pruned": "count",
}


def tracking_uri(store: Path) -> str:
    return f"sqlite:///{Path(store).resolve() / 'mlflow.db'}"


artifact_store.register()  # `mlflow-artifacts:` locations, in the store's own folder


class Tracker:
    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self.uri = tracking_uri(self.store)
        os.environ.setdefault("MLFLOW_TRACKING_URI", self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        with store_lock(self.store):  # MLflow makes its tables on first use: one at a time
            self.client.search_experiments(max_results=1)

    def sweep_run(self, sweep: str, create: bool, space: SearchSpace | None = None) -> str:
        """The parent run of `sweep` (created with its experiment when `create`); with
        `space`, the experiment and run are described from it (`describe_sweep`)."""
        experiment_id = self._experiment_id(sweep, create)
        runs = self.client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'sweep'")
        if runs:
            run_id = runs[0].info.run_id
        else:
            run_id = self.client.create_run(experiment_id, run_name=sweep,
                                            tags={ROLE_TAG: "sweep"}).info.run_id
        if space is not None:
            self.describe_sweep(run_id, space)
        return run_id

    def describe_sweep(self, parent_run_id: str, space: SearchSpace) -> None:
        """The space's description and a legend of the metrics on the experiment and its
        parent run; the searched leverages (and their `when:`) as tags of the parent run,
        which `log_trial` reads to name and trim the child runs."""
        experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        intro = space.description or f"Sweep of {space.path.name} (no description in it)."
        objectives = ", ".join(f"{o.metric} ({o.direction})" for o in space.objectives)
        searched = space.searched()
        note = (f"{intro}\n\nObjectives: {objectives}. Searched: {', '.join(searched) or 'none'}"
                f".\n\n{_legend('Trial runs (one per trial)', TRIAL_METRICS)}\n\n"
                f"{_legend('This run (the sweep)', SWEEP_METRICS)}")
        self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        self.client.set_experiment_tag(experiment_id, NOTE_TAG, note)
        tags = [RunTag(NOTE_TAG, note), RunTag(SEARCHED_TAG, ",".join(searched))]
        conditions = {lev.name: [[other, list(values)] for other, values in lev.when]
                      for lev in space.leverages if lev.when}
        if conditions:
            tags.append(RunTag(CONDITIONS_TAG, json.dumps(conditions)))
        self.client.log_batch(parent_run_id, tags=tags)

    def log_sweep_progress(self, parent_run_id: str, study: optuna.Study,
                           space: SearchSpace) -> None:
        """Hypervolume, front size and trial counts as metrics of the sweep's run, at
        step = configurations finished (called after each batch of finished trials)."""
        values = sweep_progress(study, space)
        now = int(time.time() * 1000)
        step = int(values["sweep/trials_done"])
        self.client.log_batch(parent_run_id, metrics=[Metric(k, float(v), now, step)
                                                      for k, v in values.items()])

    def _experiment_id(self, name: str, create: bool) -> str:
        """The experiment `name`; created when `create`, its artifacts in the store's
        `artifacts/` under a file-safe form of the name."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        if not create:
            raise StoreError(f"no MLflow experiment for sweep {name!r} in {self.uri}")
        # relative to the store, wherever it is (artifact_store.py)
        artifacts = artifact_store.location(file_safe(name))
        return self.client.create_experiment(name, artifact_location=artifacts,
                                             tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})

    def log_sweep_file(self, parent_run_id: str, path: Path) -> None:
        self._upload(parent_run_id, path)

    def shared_file(self, name: str, write: Callable[[Path], None]) -> str:
        """The run holding `name` once for the whole store (in the experiment
        SHARED_EXPERIMENT), `write(path)` making the file the first time; its run id."""
        with store_lock(self.store):  # two sweeps reporting at once make one run
            experiment_id = self._experiment_id(SHARED_EXPERIMENT, create=True)
            runs = self.client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'shared'")
            if runs:
                run_id = runs[0].info.run_id
            else:
                run_id = self.client.create_run(
                    experiment_id, run_name="shared files", tags={
                        ROLE_TAG: "shared", NOTE_TAG: "Files every sweep's artifacts of this "
                        "store use (plotly.js for pareto.html), kept once."}).info.run_id
                self.client.set_terminated(run_id)
            if name not in {a.path for a in self.client.list_artifacts(run_id)}:
                with tempfile.TemporaryDirectory() as tmp:
                    write(Path(tmp) / name)
                    self._upload(run_id, Path(tmp) / name)
        return run_id

    def artifact_folder(self, run_id: str) -> Path | None:
        """Where a run's artifacts are on this machine (None: not on this machine)."""
        return artifact_store.local_path(self.client.get_run(run_id).info.artifact_uri,
                                         self.store.resolve())

    def _upload(self, run_id: str, path: Path) -> None:
        """Copy a file into the run's artifacts. A copy that fails (disk full, read-only)
        leaves no partial file, which gives a full disk its space back for the run's
        status, and is one line naming the file."""
        try:
            self.client.log_artifact(run_id, str(path))
        except OSError as exc:
            what = describe(exc)
            if what is None:
                raise
            folder = artifact_store.local_path(self.client.get_run(run_id).info.artifact_uri,
                                               self.store.resolve())
            target = (folder or Path(".")) / Path(path).name
            if folder is not None:
                with suppress(OSError):
                    target.unlink(missing_ok=True)
            raise StoreError(f"{target}: {what}") from None

    def report_failed(self, parent_run_id: str, reason: str) -> None:
        """The sweep's run FAILED, not left RUNNING, when its final report could not be
        written (its trials are all logged); `sweeper report` can write it later."""
        self.client.set_tag(parent_run_id, REPORT_TAG, f"failed: {reason}"[:5000])
        self.client.set_terminated(parent_run_id, RunStatus.to_string(RunStatus.FAILED))

    def report_written(self, parent_run_id: str) -> None:
        """A sweep whose final report had failed is FINISHED once `sweeper report` wrote it."""
        if self.client.get_run(parent_run_id).data.tags.get(REPORT_TAG, "").startswith("failed"):
            self.client.set_tag(parent_run_id, REPORT_TAG, "written by sweeper report")
            self.finish_sweep(parent_run_id)

    def log_sweep_params(self, parent_run_id: str, params: dict[str, str]) -> None:
        existing = self.client.get_run(parent_run_id).data.params
        fresh = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        if fresh:
            self.client.log_batch(parent_run_id, params=fresh)

    def log_environment(self, run_id: str, command: Sequence[str] | None = None) -> None:
        """This process's software (`environment.sweep_environment`) as tags of `run_id`;
        the installed packages and, from a dirty checkout, its diff as artifacts."""
        software = sweep_environment(command)
        tags = [RunTag(ENV_PREFIX + k, v[:5000]) for k, v in software.items()]
        if not software["commit"].startswith("unknown"):
            tags.append(RunTag("mlflow.source.git.commit", software["commit"]))
        self.client.log_batch(run_id, tags=tags)
        with tempfile.TemporaryDirectory() as tmp:
            files = {"pip-freeze.txt": installed_packages(), "git-diff.patch": git_state()[2]}
            for name, text in files.items():
                if text:
                    (Path(tmp) / name).write_text(text)
            self.client.log_artifacts(run_id, tmp, "environment")

    def recorded_environment(self, run_id: str) -> dict[str, str]:
        """The software and machine recorded with a run: its sweep's software (or its own,
        for a single trial), then its own machine facts."""
        tags = self.client.get_run(run_id).data.tags
        parent = tags.get("mlflow.parentRunId")
        if parent:
            tags = {**self.client.get_run(parent).data.tags, **tags}
        return {**_unprefixed(tags, ENV_PREFIX), **_unprefixed(tags, MACHINE_PREFIX)}

    def environment_changes(self, run_id: str, current: dict[str, str]) -> list[str] | None:
        """What differs between the environment recorded with `run_id` and `current`, one
        line each; None when the run has none recorded (logged before they were)."""
        recorded = self.recorded_environment(run_id)
        return differences(recorded, current) if recorded else None

    def sweep_machines(self, parent_run_id: str) -> list[dict[str, str]]:
        """The machine facts of every trial logged under the sweep's run."""
        return [_unprefixed(run.data.tags, MACHINE_PREFIX)
                for run in self._child_runs(parent_run_id)]

    def _child_runs(self, parent_run_id: str) -> list:
        parent = self.client.get_run(parent_run_id)
        return self.client.search_runs(
            [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            max_results=50_000)

    def finish_sweep(self, parent_run_id: str) -> None:
        self.client.set_terminated(parent_run_id, RunStatus.to_string(RunStatus.FINISHED))

    def logged_trials(self, parent_run_id: str, clean_up: bool = False) -> dict[int, str]:
        """Trial number -> child run id of its first repeat, for child runs logged to the
        end (see `logged_repeats`)."""
        return {number: run_id for (number, repeat), run_id in
                self.logged_repeats(parent_run_id, clean_up).items() if repeat == 0}

    def logged_repeats(self, parent_run_id: str,
                       clean_up: bool = False) -> dict[tuple[int, int], str]:
        """(trial number, repeat) -> child run id, for child runs logged to the end. With
        `clean_up` (only the sweep's own driver, which knows no other writer is logging),
        child runs cut off mid-logging are deleted, to be logged again from Optuna."""
        done = {}
        for run in self._child_runs(parent_run_id):
            tags = run.data.tags
            if run.info.status in ("FINISHED", "FAILED") and TRIAL_TAG in tags:
                done[int(tags[TRIAL_TAG]), int(tags.get(REPEAT_TAG, 0))] = run.info.run_id
            elif clean_up:
                self.client.delete_run(run.info.run_id)
        return done

    def log_trial(self, parent_run_id: str, number: int, config: TrialConfig,
                  result: TrialResult, repeat: int = 0) -> str:
        """One repeat of a trial (configuration) as a child run of the sweep's run."""
        parent = self.client.get_run(parent_run_id)
        tags = {"mlflow.parentRunId": parent_run_id, TRIAL_TAG: str(number),
                CONFIG_TAG: str(number), REPEAT_TAG: str(repeat),
                ROLE_TAG: "trial", "sweeper.status": result.status}
        if result.reason:
            tags["sweeper.reason"] = result.reason[:5000]
        if result.info.get(OUTSIDE_SPACE):  # run with --force: not a point of its space
            tags["sweeper.outside_space"] = "; ".join(result.info[OUTSIDE_SPACE])[:5000]
        tags.update(_meter_tags(result.meters, result.info.get("meter_selection", {})))
        if "reason" in result.info.get("node_energy", {}):
            tags["sweeper.node_energy_note"] = str(result.info["node_energy"]["reason"])[:5000]
        tags.update({MACHINE_PREFIX + k: str(v)[:5000]
                     for k, v in result.info.get("machine", {}).items()})
        if result.info.get("ran_elsewhere"):
            tags[RAN_ELSEWHERE_TAG] = "; ".join(result.info["ran_elsewhere"])[:5000]
        for key in ("ray_retries", "interruptions"):  # see sweeper.attempts
            if result.info.get(key):
                tags[f"sweeper.{key}"] = str(result.info[key])
        searched = [s for s in parent.data.tags.get(SEARCHED_TAG, "").split(",") if s]
        if searched:
            tags[SEARCHED_TAG] = ",".join(searched)
        tags[NOTE_TAG] = _legend(f"Trial {number}" + (f", repeat {repeat}" if repeat else ""),
                                 TRIAL_METRICS)
        params = _applicable_params(config, json.loads(parent.data.tags.get(CONDITIONS_TAG,
                                                                            "{}")))
        name = f"trial-{number}" + (f"-repeat-{repeat}" if repeat else "")
        name = " ".join([name, *_searched_values(params, searched)])[:250]
        start_ms, end_ms = _span_ms(result)
        run = self.client.create_run(parent.info.experiment_id, run_name=name, tags=tags,
                                     start_time=start_ms)
        run_id = run.info.run_id
        self.client.log_batch(run_id, metrics=_metrics(result, end_ms),
                              params=[Param(k, str(v)) for k, v in params.items()])
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / CONFIG_ARTIFACT).write_text(config.to_json())
            (Path(tmp) / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
            self._upload(run_id, Path(tmp) / CONFIG_ARTIFACT)
            self._upload(run_id, Path(tmp) / "result.json")
        status = RunStatus.FINISHED if result.status != "failed" else RunStatus.FAILED
        self.client.set_terminated(run_id, RunStatus.to_string(status), end_time=end_ms)
        return run_id


    def log_baseline(self, experiment: str, config: TrialConfig, result: BaselineResult) -> str:
        """A centralized baseline as a run of its own experiment: params like a trial's,
        per-epoch metrics (step = epoch) named like a trial's per-round ones, meter tags."""
        experiment_id = self._experiment_id(experiment, create=True)
        tags = {ROLE_TAG: "baseline",
                **_meter_tags(result.meters, result.info.get("meter_selection", {}))}
        run = self.client.create_run(experiment_id, run_name="baseline", tags=tags)
        self.client.log_batch(run.info.run_id, metrics=_baseline_metrics(result),
                              params=[Param(k, str(v)) for k, v in _params(config).items()])
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id


def _meter_tags(meters: dict[str, MeterInfo], selection: dict) -> dict[str, str]:
    """Which counters were chosen (and why), and the meter behind each energy component."""
    tags = {"sweeper.node_meter": str(selection.get("node_meter")),
            "sweeper.client_windows": str(selection.get("client_windows"))}
    if selection.get("why") or selection.get("not_used"):
        tags["sweeper.node_meter_note"] = str(selection.get("why") or
                                              selection.get("not_used"))[:5000]
    for component, info in meters.items():
        tags[f"sweeper.meter.{component}"] = info.meter[:5000]
        tags[f"sweeper.meter_kind.{component}"] = info.kind
    return tags


def _unprefixed(tags: dict[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}


def _baseline_metrics(result: BaselineResult) -> list[Metric]:
    now = int(time.time() * 1000)
    out = []
    for rec in result.epochs:
        values = {"accuracy": rec.accuracy, "loss": rec.loss, "energy_j": rec.energy_j,
                  "epoch_wall_s": rec.wall_s}
        for component, joules in rec.energy.items():
            values[f"energy_{result.meters[component].kind}.{component}"] = joules
        out += [Metric(k, float(v), now, rec.epoch) for k, v in values.items()]
    finals = {"final.accuracy": result.accuracy, "final.energy_j": result.energy_j,
              "final.wall_s": result.wall_s}
    return out + [Metric(k, float(v), now, 0) for k, v in finals.items()]


def _params(config: TrialConfig) -> dict[str, object]:
    return {**config.leverages,
            **{f"scenario.{k}": v for k, v in config.to_dict()["scenario"].items()},
            "seed": config.seed}


def _applicable_params(config: TrialConfig,
                       conditions: dict[str, list]) -> dict[str, object]:
    """A trial's params without the settings that had no effect on it (`inapplicable`)
    nor leverages whose `when:` in the space does not hold; trial_config.json keeps all."""
    values = config.leverages
    skip = inapplicable(config) | {
        name for name, when in conditions.items()
        if not all(values.get(other) in allowed for other, allowed in when)}
    return {k: v for k, v in _params(config).items() if k not in skip and v is not None}


def _searched_values(params: dict[str, object], searched: list[str]) -> list[str]:
    """The searched leverages' values for a run name: a choice alone where no other
    searched leverage has it among its choices (`int8`), else `name=value` (`lr=0.0123`)."""
    out = []
    for name in searched:
        if name not in params:
            continue
        value = params[name]
        others = {str(c) for other in searched if other != name and other in LEVERAGES
                  for c in LEVERAGES[other].choices}
        if isinstance(value, str) and value != "none" and value not in others:
            out.append(value)
        else:
            out.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return out


def _span_ms(result: TrialResult) -> tuple[int, int]:
    """When the trial started and ended (ms since the epoch): its Ray task's window, else
    its federation's start and now (a trial run and logged by one process), else now."""
    now = int(time.time() * 1000)
    placement = result.info.get("placement") or {}
    try:
        return (int(dt.datetime.fromisoformat(placement["start_utc"]).timestamp() * 1000),
                int(dt.datetime.fromisoformat(placement["end_utc"]).timestamp() * 1000))
    except (KeyError, TypeError, ValueError):
        started = result.info.get("federation_started_unix")
        return (int(started * 1000) if started else now), now


def _round_ends_ms(result: TrialResult, end_ms: int) -> list[int]:
    """When each round ended: the federation's start + the rounds' wall times so far (a
    result without its start: counted back from the trial's end)."""
    walls = [r.wall_s if r.wall_s == r.wall_s else 0.0 for r in result.rounds]
    started = result.info.get("federation_started_unix")
    start_s = started if started else end_ms / 1000 - sum(walls)
    return [int((start_s + sum(walls[: i + 1])) * 1000) for i in range(len(walls))]


def _metrics(result: TrialResult, end_ms: int) -> list[Metric]:
    """A trial's metrics (see TRIAL_METRICS), stamped with when each round ended."""
    out = []
    for rec, stamp in zip(result.rounds, _round_ends_ms(result, end_ms), strict=True):
        values = {"round/accuracy": rec.accuracy, "round/loss": rec.loss,
                  "round/client_accuracy": rec.client_accuracy,
                  "round/bytes_up": rec.bytes_up, "round/bytes_down": rec.bytes_down,
                  "round/wall_s": rec.wall_s, "round/examples_used": rec.examples_used,
                  "cumulative/energy_j": rec.energy_j}
        for component, joules in rec.energy.items():
            kind = result.meters[component].kind if component in result.meters else "unknown"
            values[f"cumulative/energy_{kind}.{component}"] = joules
        out += [Metric(k, float(v), stamp, rec.round) for k, v in values.items()]
    if result.status != "failed":
        finals = {"final.accuracy": result.accuracy, "final.energy_j": result.energy_j,
                  "final.co2_g": result.co2_g,
                  "final.wall_s": result.wall_s, "final.bytes_total": result.bytes_total}
        for name in ("node_energy_j", "energy_to_accuracy_j"):  # NaN: not logged
            value = getattr(result, name)
            if value == value:
                finals[f"final.{name}"] = value
        if "warmup_cpu_s" in result.info:
            finals["final.warmup_cpu_s"] = result.info["warmup_cpu_s"]
        out += [Metric(k, float(v), end_ms, 0) for k, v in finals.items()]
    elif "spent_j" in result.info:  # what the failed trial used until it failed (modeled)
        out.append(Metric("failed.spent_j", float(result.info["spent_j"]), end_ms, 0))
    return out


def _legend(title: str, metrics: dict[str, str]) -> str:
    return f"{title}, metrics and units:\n" + "\n".join(f"- `{name}`: {what}"
                                                       for name, what in metrics.items())


def sweep_progress(study: optuna.Study, space: SearchSpace) -> dict[str, float]:
    """The sweep so far (see SWEEP_METRICS): hypervolume as `report.hypervolume_rows`
    computes its last row."""
    finished = [t for t in study.get_trials(deepcopy=False) if studies.is_finished(t)]
    outcomes = [studies.outcome(t) for t in finished]
    feasible = [tuple(t.values) for t in finished
                if t.state == TrialState.COMPLETE and studies.is_feasible(t)]
    maximize = [o.direction == "maximize" for o in space.objectives]
    history = hypervolume_history(feasible, maximize) if len(maximize) > 1 else []
    return {"sweep/hypervolume": history[-1] if history else 0.0,
            "sweep/front_size": float(len(studies.pareto_trials(study))),
            "sweep/trials_done": float(len(finished)),
            "sweep/trials_complete": float(outcomes.count("complete")),
            "sweep/trials_failed": float(outcomes.count("failed") + outcomes.count("diverged")),
            "sweep/trials_pruned": float(outcomes.count("pruned"))}


def ui_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs (or of one run), in its model-training
    view. MLflow 3.17's UI takes the view from this URL's `workflowType`, else from the
    browser's last choice (GenAI on a first visit), never from `mlflow.experimentKind`."""
    page = f"experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{base.rstrip('/')}/#/{page}?workflowType=machine_learning"


def load_trial_config_json(run_id: str, uri: str | None = None) -> str | None:
    client = MlflowClient(tracking_uri=uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            return Path(path).read_text()
    except Exception:  # mlflow raises several types for a missing run/artifact
        return None


def trial_config_of_run(run_id: str, uri: str | None = None) -> TrialConfig:
    """Rebuild the exact configuration a logged trial ran with."""
    text = load_trial_config_json(run_id, uri)
    if text is None:
        raise StoreError(f"MLflow run {run_id} has no trial_config.json artifact")
    return TrialConfig.from_json(text)
