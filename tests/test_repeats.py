"""Repeats: every configuration run N times with seeds scenario.seed + r, Optuna told the
means, MLflow one child run per repeat, the front with 95% intervals; resume finishes a
half-repeated configuration without running its finished repeats again."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path

import optuna
import pytest
from conftest import TINY_SCENARIO, kill_driver_when, write_space
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeper.cli import main
from sweeper.study import storage_url, stored_repeats
from sweeper.tracking import tracking_uri

T_975 = {2: 4.302652729911275}  # Student t, 97.5% quantile, by degrees of freedom


def _repeat_runs(store: Path, sweep: str) -> list:
    client = MlflowClient(tracking_uri(store))
    experiment = client.get_experiment_by_name(sweep)
    return [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("sweeper.role") == "trial"]


def test_each_configuration_runs_three_seeds_and_optuna_gets_the_means(
        tmp_path: Path, ray_cluster: str, capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path / "rep.yaml", budget={"trials": 2, "repeats": 3, "parallel": 2})
    store = tmp_path / "store"
    assert main(["pareto", "--space", str(space), "--store", str(store), "--name", "rep",
                 "--ray-address", ray_cluster]) == 0
    printed = capsys.readouterr().out

    study = optuna.load_study(study_name="rep", storage=storage_url(store))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    runs = _repeat_runs(store, "rep")
    assert len(runs) == 6
    by_config: dict[int, dict[int, dict]] = {}
    for run in runs:
        tags, params = run.data.tags, run.data.params
        repeat = int(tags["sweeper.repeat"])
        assert int(params["seed"]) == TINY_SCENARIO["seed"] + repeat
        by_config.setdefault(int(tags["sweeper.config"]), {})[repeat] = run.data.metrics
    assert {c: sorted(r) for c, r in by_config.items()} == {0: [0, 1, 2], 1: [0, 1, 2]}

    parent = runs[0].data.tags["mlflow.parentRunId"]
    front_csv = MlflowClient(tracking_uri(store)).download_artifacts(parent, "pareto.csv",
                                                                      str(tmp_path))
    with open(front_csv) as f:
        rows = {int(r["trial"]): r for r in csv.DictReader(f)}
    for trial in study.trials:
        repeats = by_config[trial.number]
        for i, metric in enumerate(("accuracy", "energy_j")):
            values = [repeats[r][f"final.{metric}"] for r in range(3)]
            assert trial.values[i] == pytest.approx(statistics.fmean(values))
            if trial.number in rows:
                row = rows[trial.number]
                assert float(row[metric]) == pytest.approx(statistics.fmean(values))
                assert float(row[f"{metric}_ci95"]) == pytest.approx(
                    T_975[2] * statistics.stdev(values) / math.sqrt(3))
                assert row["repeats"] == "3"
        energies = [repeats[r]["final.energy_j"] for r in range(3)]
        assert len(set(energies)) == 3  # another seed is another federation
    assert rows and "±" in printed
    cvs = [statistics.stdev(e) / statistics.fmean(e) for e in (
        [repeats[r]["final.energy_j"] for r in range(3)] for repeats in by_config.values())]
    assert f"median coefficient of variation {statistics.median(cvs):.2%}" in printed

    # the page draws each front point's interval: the csv's half-widths, in front order
    page = Path(MlflowClient(tracking_uri(store)).download_artifacts(parent, "pareto.html",
                                                                     str(tmp_path)))
    figure = json.loads(re.search(r"const figure = (.*);\n", page.read_text()).group(1))
    (front,) = [trace for trace in figure["data"] if trace["name"] == "Pareto front"]
    by_x = sorted(rows.values(), key=lambda row: float(row["accuracy"]))
    assert front["error_x"]["array"] == pytest.approx([float(r["accuracy_ci95"]) for r in by_x])
    assert front["error_y"]["array"] == pytest.approx([float(r["energy_j_ci95"]) for r in by_x])
    assert all(v > 0 for v in front["error_y"]["array"])


def test_resume_finishes_a_half_repeated_configuration(tmp_path: Path,
                                                        ray_cluster: str) -> None:
    space = write_space(tmp_path / "rep.yaml", budget={"trials": 1, "repeats": 3,
                                                       "parallel": 1},
                        scenario={**TINY_SCENARIO, "rounds": 3})
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "sweeper.cli", "pareto", "--space", str(space),
           "--store", str(store), "--ray-address", ray_cluster]
    before = kill_driver_when(cmd, store, "half",
                              lambda study: bool(study.trials)
                              and 0 in stored_repeats(study.trials[0]),
                              tmp_path / "driver.log").trials[0]
    assert before.state == TrialState.RUNNING
    # results are Optuna system attrs (optuna-dashboard shows user attrs, which stay small)
    kept = {k: v for k, v in before.system_attrs.items() if k.startswith("repeat.")}
    assert 1 <= len(kept) < 3

    # the resume in-process (the same `main` the CLI runs; the kill needed a process)
    assert main(["pareto", "--space", str(space), "--store", str(store), "--resume", "half",
                 "--ray-address", ray_cluster]) == 0
    study = optuna.load_study(study_name="half", storage=storage_url(store))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    after = study.trials[0].system_attrs
    assert not any(k.startswith("repeat.") for k in study.trials[0].user_attrs)
    assert {k: after[k] for k in kept} == kept  # finished repeats were not run again
    assert sorted(k for k in after if k.startswith("repeat.")) == [
        "repeat.0", "repeat.1", "repeat.2"]
    runs = _repeat_runs(store, "half")
    assert sorted(int(r.data.tags["sweeper.repeat"]) for r in runs) == [0, 1, 2]
    for run in runs:  # each MLflow run holds the result Optuna kept for its repeat
        stored = json.loads(after[f"repeat.{run.data.tags['sweeper.repeat']}"])
        assert run.data.metrics["final.energy_j"] == pytest.approx(stored["energy_j"])
