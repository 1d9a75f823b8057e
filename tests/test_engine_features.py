"""Samplers, constraints, budgets, anytime fronts, reports and reproduction, on real sweeps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import write_space
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeper import study as studies
from sweeper.cli import main
from sweeper.fronts import Point, hypervolume, non_dominated
from sweeper.orchestrate import run_sweep
from sweeper.report import round_front_rows
from sweeper.samplers import SAMPLERS
from sweeper.space import load_space
from sweeper.study import storage_url
from sweeper.tracking import tracking_uri

GRID = {"precision": {"choices": ["fp32", "bf16"]},
        "update_codec": {"choices": ["none", "int8"]}}


def test_grid_sampler_enumerates_the_space(grid_sweep) -> None:
    store, _ = grid_sweep
    study = optuna.load_study(study_name="grid", storage=storage_url(store))
    combos = {(t.params["precision"], t.params["update_codec"]) for t in study.trials}
    assert combos == {(p, c) for p in ("fp32", "bf16") for c in ("none", "int8")}
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_round_level_front_against_an_independent_check(grid_sweep) -> None:
    store, _ = grid_sweep
    study = optuna.load_study(study_name="grid", storage=storage_url(store))
    points = [(t.number, r.round, r.accuracy, r.energy_j) for t in study.trials
              for r in studies.stored_result(t).rounds]
    expected = {(n, r) for n, r, a, e in points
                if not any(a2 >= a and e2 <= e and (a2, e2) != (a, e)
                           for _, _, a2, e2 in points)}
    assert {(row["trial"], row["round"]) for row in round_front_rows(study)} == expected
    assert len({n for n, _ in expected}) >= 1 and len(points) == 8


def test_report_list_and_from_run(grid_sweep, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    store, _ = grid_sweep
    assert main(["report", "grid", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "Anytime front" in out and "hypervolume after 4 feasible trials" in out
    client = MlflowClient(tracking_uri(store))
    parent = client.search_runs([client.get_experiment_by_name("grid").experiment_id],
                                "tags.`sweeper.role` = 'sweep'")[0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.png", "pareto.html", "pareto_rounds.csv",
            "hypervolume.csv", "hypervolume.png", "importances.json"} <= names
    with Path(client.download_artifacts(parent.info.run_id, "hypervolume.csv",
                                        str(tmp_path))).open() as f:
        history = list(csv.DictReader(f))
    values = [float(r["hypervolume"]) for r in history]
    assert values == sorted(values) and values[-1] > 0  # never decreases

    assert main(["list", "--store", str(store)]) == 0
    assert "grid" in capsys.readouterr().out

    child = client.search_runs([parent.info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")[0]
    assert main(["trial", "--from-run", child.info.run_id, "--store", str(store),
                 "--json"]) == 0
    compared = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert compared["new"]["accuracy"] == compared["old"]["accuracy"]  # same seed, CPU
    # Flower draws node and run ids at random: their varint sizes may differ by a few bytes.
    assert abs(compared["new"]["bytes_total"] - compared["old"]["bytes_total"]) <= 64


def test_constraints_mark_infeasible_trials(tmp_path: Path, ray_cluster: str) -> None:
    space = load_space(write_space(tmp_path / "c.yaml", leverages=GRID,
                                   sampler={"name": "grid", "seed": 0},
                                   budget={"trials": 2, "parallel": 2},
                                   constraints=["accuracy >= 2"]))
    outcome = run_sweep(space, tmp_path / "store", sweep="constrained", dashboard=False)
    trials = outcome.study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials)  # kept in the study
    assert not any(studies.is_feasible(t) for t in trials)
    assert all(t.system_attrs["constraints:accuracy >= 2"] > 0 for t in trials)
    assert studies.pareto_trials(outcome.study) == []


def test_wall_clock_budget_stops_cleanly(tmp_path: Path, ray_cluster: str) -> None:
    space = load_space(write_space(tmp_path / "w.yaml",
                                   budget={"trials": 50, "parallel": 1, "wall_clock_s": 0.1}))
    outcome = run_sweep(space, tmp_path / "store", sweep="clocked", dashboard=False)
    states = [t.state for t in outcome.study.trials]
    assert 1 <= states.count(TrialState.COMPLETE) < 50
    assert TrialState.RUNNING not in states
    assert set(outcome.trial_runs) == {t.number for t in outcome.study.trials}


def test_energy_budget_stops_the_sweep(tmp_path: Path, ray_cluster: str) -> None:
    space = load_space(write_space(tmp_path / "e.yaml",
                                   budget={"trials": 50, "parallel": 1, "energy_j": 1e-9}))
    outcome = run_sweep(space, tmp_path / "store", sweep="energy", dashboard=False)
    assert len(outcome.study.trials) == 1  # the first trial spent the whole budget


def test_hypervolume_and_non_dominated_by_hand() -> None:
    values = np.array([[0.5, 10.0], [0.8, 20.0]])  # (accuracy max, energy min)
    # boxes to ref (0, 30): 0.5 x 20 + 0.8 x 10 - overlap 0.5 x 10 = 13
    assert hypervolume(values, [True, False], np.array([0.0, 30.0])) == pytest.approx(13.0)
    points = [Point(0, None, (0.5, 10.0)), Point(1, None, (0.4, 12.0)),
              Point(2, None, (0.8, 20.0)), Point(3, None, (0.8, 20.0))]
    assert [p.trial for p in non_dominated(points, [True, False])] == [0, 2, 3]


def test_bad_constraint_and_grid_errors(tmp_path: Path) -> None:
    from sweeper.errors import SpaceError

    with pytest.raises(SpaceError, match=r"constraints\[0\]"):
        load_space(write_space(tmp_path / "a.yaml", constraints=["accuracy > 0.8"]))
    with pytest.raises(SpaceError, match=r"leverages\.lr: sampler grid needs"):
        load_space(write_space(tmp_path / "b.yaml", sampler={"name": "grid"}))


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - {"grid"}))  # grid: its own tests
def test_each_sampler_proposes_valid_configurations(tmp_path: Path, sampler: str) -> None:
    space = load_space(write_space(tmp_path / "s.yaml", sampler={"name": sampler,
                                                                   "seed": 3}))
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=studies.make_sampler(space))
    rng = np.random.default_rng(0)
    for _ in range(12):
        trial = study.ask()
        values = space.sample(trial)
        assert values["precision"] in ("fp32", "bf16") and 0.01 <= values["lr"] <= 0.1
        study.tell(trial, [float(rng.random()), float(rng.random())])
    assert len(study.best_trials) >= 1


def test_prune_rule_is_sound_under_its_assumption() -> None:
    from sweeper.fronts import PruneRule

    rule = PruneRule(max_accuracy=0.9, front=((0.95, 10.0), (0.6, 2.0)))
    assert rule.reason(9.9) is None  # could still beat (0.95, 10 J) by finishing cheaper
    assert "10 J" in rule.reason(10.0)  # can only tie or lose against it from here on
    assert PruneRule(0.99, ((0.95, 10.0),)).reason(50.0) is None  # no point reaches 0.99


def test_a_pruned_trial_stops_early_and_is_recorded_as_pruned(tmp_path: Path) -> None:
    from sweeper.config import Scenario, TrialConfig, resolve_leverages
    from sweeper.fronts import PruneRule
    from sweeper.trial import run_trial

    scenario = Scenario(corpus_speakers=8, corpus_takes=2, num_clients=2, rounds=4)
    config = TrialConfig(scenario, resolve_leverages({}, scenario), 0)
    result = run_trial(config, PruneRule(0.0, ((0.5, 1e-9),)))
    assert result.status == "pruned" and len(result.rounds) == 1
    assert result.reason.startswith("round 1: pruned")

    space = load_space(write_space(tmp_path / "p.yaml", pruning={"max_accuracy": 0.9}))
    study = optuna.create_study(storage=storage_url(tmp_path), directions=["maximize",
                                                                           "minimize"])
    trial = study.ask()
    studies.tell(study, trial, space, result)
    (frozen,) = study.trials
    assert frozen.state == TrialState.PRUNED
    assert frozen.user_attrs["pruned_after_round"] == 1
