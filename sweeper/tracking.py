"""MLflow: one experiment and parent run per sweep, one child run per trial.

Only the sweep's driver writes here. Every metric name carries its unit; energy metrics say
which path (measured/modeled) produced them; the meters are tags of the child run.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from sweeper.config import TrialConfig
from sweeper.environment import differences, git_state, installed_packages, sweep_environment
from sweeper.errors import StoreError
from sweeper.names import file_safe
from sweeper.result import OUTSIDE_SPACE, MeterInfo, TrialResult
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


def tracking_uri(store: Path) -> str:
    return f"sqlite:///{Path(store).resolve() / 'mlflow.db'}"


class Tracker:
    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self.uri = tracking_uri(self.store)
        os.environ.setdefault("MLFLOW_TRACKING_URI", self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        with store_lock(self.store):  # MLflow makes its tables on first use: one at a time
            self.client.search_experiments(max_results=1)

    def sweep_run(self, sweep: str, create: bool) -> str:
        """The parent run of `sweep` (created with its experiment when `create`)."""
        experiment_id = self._experiment_id(sweep, create)
        runs = self.client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'sweep'")
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(experiment_id, run_name=sweep, tags={ROLE_TAG: "sweep"})
        return run.info.run_id

    def _experiment_id(self, name: str, create: bool) -> str:
        """The experiment `name`; created when `create`, its artifacts in the store's
        `artifacts/` under a file-safe form of the name."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        if not create:
            raise StoreError(f"no MLflow experiment for sweep {name!r} in {self.uri}")
        artifacts = (self.store.resolve() / "artifacts" / file_safe(name)).as_uri()
        return self.client.create_experiment(name, artifact_location=artifacts)

    def log_sweep_file(self, parent_run_id: str, path: Path) -> None:
        self._upload(parent_run_id, path)

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
            uri = urlparse(self.client.get_run(run_id).info.artifact_uri)
            target = Path(unquote(uri.path)) / Path(path).name
            if uri.scheme == "file":
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
        name = f"trial-{number}" + (f"-repeat-{repeat}" if repeat else "")
        run = self.client.create_run(parent.info.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        self.client.log_batch(run_id, metrics=_metrics(result),
                              params=[Param(k, str(v)) for k, v in _params(config).items()])
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / CONFIG_ARTIFACT).write_text(config.to_json())
            (Path(tmp) / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
            self._upload(run_id, Path(tmp) / CONFIG_ARTIFACT)
            self._upload(run_id, Path(tmp) / "result.json")
        status = RunStatus.FINISHED if result.status != "failed" else RunStatus.FAILED
        self.client.set_terminated(run_id, RunStatus.to_string(status))
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


def _metrics(result: TrialResult) -> list[Metric]:
    now = int(time.time() * 1000)
    out = []
    for rec in result.rounds:
        values = {"accuracy": rec.accuracy, "loss": rec.loss, "energy_j": rec.energy_j,
                  "bytes_up": rec.bytes_up, "bytes_down": rec.bytes_down,
                  "round_wall_s": rec.wall_s, "client_accuracy": rec.client_accuracy,
                  "examples_used": rec.examples_used}
        for component, joules in rec.energy.items():
            kind = result.meters[component].kind if component in result.meters else "unknown"
            values[f"energy_{kind}.{component}"] = joules
        out += [Metric(k, float(v), now, rec.round) for k, v in values.items()]
    if result.status != "failed":
        finals = {"final.accuracy": result.accuracy, "final.energy_j": result.energy_j,
                  "final.co2_g": result.co2_g,
                  "final.wall_s": result.wall_s, "final.bytes_total": result.bytes_total}
        for name in ("node_energy_j", "energy_to_accuracy_j"):  # NaN: not logged
            value = getattr(result, name)
            if value == value:
                finals[f"final.{name}"] = value
        out += [Metric(k, float(v), now, 0) for k, v in finals.items()]
    elif "spent_j" in result.info:  # what the failed trial used until it failed (modeled)
        out.append(Metric("failed.spent_j", float(result.info["spent_j"]), now, 0))
    return out


def load_trial_config_json(run_id: str, uri: str | None = None) -> str | None:
    client = MlflowClient(tracking_uri=uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            return Path(path).read_text()
    except Exception:  # mlflow raises several types for a missing run/artifact
        return None
