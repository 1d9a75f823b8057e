"""Whole sweeps on real Ray, Flower, Optuna storage and an MLflow store in a temp dir."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import TINY_SCENARIO, kill_driver_when, write_space
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeper.cli import main
from sweeper.study import storage_url
from sweeper.tracking import tracking_uri

LEVERAGES = {"precision", "update_codec", "local_epochs", "clients_per_round", "lr",
             "batch_size"}


def _child_runs(store: Path, sweep: str) -> tuple[str, list]:
    client = MlflowClient(tracking_uri(store))
    experiment = client.get_experiment_by_name(sweep)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweeper.role") == "sweep"]
    assert len(parents) == 1
    parent = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    return parent, children


def _non_dominated(points: dict[int, tuple[float, float]]) -> set[int]:
    """Trials no other trial beats on both accuracy (max) and energy (min)."""
    def dominates(a, b):
        return a[0] >= b[0] and a[1] <= b[1] and a != b
    return {n for n, p in points.items() if not any(dominates(q, p) for q in points.values())}


def test_tiny_sweep_end_to_end(tmp_path: Path, ray_cluster: str,
                               capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path / "tiny.yaml")
    store = tmp_path / "store"
    code = main(["pareto", "--space", str(space), "--store", str(store), "--name", "e2e",
                 "--ray-address", ray_cluster])
    printed = capsys.readouterr().out
    assert code == 0

    study = optuna.load_study(study_name="e2e", storage=storage_url(store))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len(study.trials) == 4

    client = MlflowClient(tracking_uri(store))
    parent, children = _child_runs(store, "e2e")
    assert len(children) == 4
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"tiny.yaml", "pareto.csv", "pareto.png"} <= artifacts
    points = {}
    for run in children:
        assert set(run.data.params) >= LEVERAGES, run.data.params
        for metric in ("round/accuracy", "round/loss", "cumulative/energy_j",
                       "round/bytes_up", "round/bytes_down"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [m.step for m in history] == [1, 2], metric
        windows = run.data.tags["sweeper.client_windows"]  # a counter, where this host has one
        assert run.data.tags["sweeper.meter_kind.client_compute_j"] == (
            "modeled" if windows == "None" else "measured")
        assert run.data.tags["sweeper.node_meter"] == "None"  # isolation: shared
        assert (windows != "None") or "no counter" in run.data.tags["sweeper.node_meter_note"]
        energy = [m.value for m in client.get_metric_history(run.info.run_id,
                                                                "cumulative/energy_j")]
        assert energy == sorted(energy)  # cumulative
        kind = {c: run.data.tags[f"sweeper.meter_kind.{c}"] for c in (
            "client_compute_j", "server_compute_j", "communication_j")}
        components = [
            sum(client.get_metric_history(
                run.info.run_id, f"cumulative/energy_{kind[c]}.{c}")[i].value
                for c in ("client_compute_j", "server_compute_j", "communication_j"))
            for i in range(2)]
        assert components == pytest.approx(energy)
        points[int(run.data.tags["sweeper.trial"])] = (
            run.data.metrics["final.accuracy"], run.data.metrics["final.energy_j"])

    expected = _non_dominated(points)
    front_csv = Path(client.download_artifacts(parent, "pareto.csv", str(tmp_path)))
    rows = list(csv.DictReader(front_csv.open()))
    assert {int(r["trial"]) for r in rows} == expected
    run_ids = {int(r.data.tags["sweeper.trial"]): r.info.run_id for r in children}
    for row in rows:
        assert row["mlflow_run_id"] == run_ids[int(row["trial"])]
        assert row["mlflow_run_id"] in printed


def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path: Path,
                                                         ray_cluster: str) -> None:
    # Rounds long enough that polling sees a trial running after one has finished; three
    # trials: one finished before the kill, one cut off, one never started.
    space = write_space(tmp_path / "tiny.yaml", budget={"trials": 3, "parallel": 1},
                        scenario={**TINY_SCENARIO, "rounds": 4})
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "sweeper.cli", "pareto", "--space", str(space),
           "--store", str(store), "--ray-address", ray_cluster]

    leverages = len(yaml.safe_load(space.read_text())["leverages"])  # none conditional

    def one_finished_one_running(study: optuna.Study) -> bool | str:
        trials = study.trials  # read once: the driver may add a trial between two reads
        states = [t.state for t in trials]
        if states.count(TrialState.COMPLETE) == 3:
            return "the sweep finished before it could be interrupted"
        # running with every value drawn (a trial is RUNNING from `ask`, while its values
        # are still being suggested one by one)
        return TrialState.COMPLETE in states and any(
            t.state == TrialState.RUNNING and len(t.params) == leverages for t in trials)

    before = kill_driver_when(cmd, store, "killed", one_finished_one_running,
                              tmp_path / "driver.log")
    finished_before = {t.number for t in before.trials if t.state == TrialState.COMPLETE}
    cut_off = {t.number: t.params for t in before.trials if t.state == TrialState.RUNNING}
    assert 1 <= len(finished_before) < 3 and cut_off

    # the resume in-process (the same `main` the CLI runs; the kill needed a process)
    assert main(["pareto", "--space", str(space), "--store", str(store), "--resume", "killed",
                 "--ray-address", ray_cluster]) == 0

    study = optuna.load_study(study_name="killed", storage=storage_url(store))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3  # nothing repeated
    for number in finished_before:  # finished trials were not run again
        assert study.trials[number].datetime_complete == before.trials[number].datetime_complete
        # (its MLflow run id is noted after MLflow is written: a kill between the two
        # leaves it to the resume)
        kept = [{k: v for k, v in t.user_attrs.items() if not k.startswith("mlflow_run")}
                for t in (study.trials[number], before.trials[number])]
        assert kept[0] == kept[1]
        assert study.trials[number].system_attrs == before.trials[number].system_attrs
    for number, params in cut_off.items():  # taken over under its own number, same values
        assert study.trials[number].params == params
    _, children = _child_runs(store, "killed")
    logged = [int(r.data.tags["sweeper.trial"]) for r in children]
    assert sorted(logged) == [0, 1, 2]  # one child run per trial
    # every trial names its run, those the resumed driver logged or took over included
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {
        r.info.run_id for r in children}


def test_a_sweep_mixing_both_engines(tmp_path: Path, ray_cluster: str) -> None:
    """`engine` as a leverage: a grid over it runs one trial per engine, end to end."""
    scenario = {**TINY_SCENARIO, "num_clients": 2, "rounds": 1, "client_eval": False}
    space = write_space(tmp_path / "engines.yaml", scenario=scenario,
                        budget={"trials": 2, "parallel": 2},
                        sampler={"name": "grid", "seed": 1},
                        leverages={"engine": {"choices": ["simulation", "deployment"]},
                                   "update_codec": {"value": "int8"}})
    store = tmp_path / "store"
    assert main(["pareto", "--space", str(space), "--store", str(store), "--name", "mixed",
                 "--ray-address", ray_cluster]) == 0
    study = optuna.load_study(study_name="mixed", storage=storage_url(store))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    _, children = _child_runs(store, "mixed")
    engines = {run.data.params["engine"]: run.data.metrics for run in children}
    assert set(engines) == {"simulation", "deployment"}
    simulated, deployed = engines["simulation"], engines["deployment"]
    assert abs(simulated["final.accuracy"] - deployed["final.accuracy"]) <= 0.02
    # A few bytes of metadata per message: 2 clients x 1 round x 2 directions.
    assert abs(simulated["final.bytes_total"] - deployed["final.bytes_total"]) <= 64 * 4
