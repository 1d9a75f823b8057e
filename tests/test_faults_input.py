"""Faults of what the user gives: resources no node has, resources held by other work, a
learning rate that makes training diverge, `--set` values outside the space, a sweep name
that does not exist. Each is refused in one line (exit 2, nothing written) or becomes a
result with its reason."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray
from conftest import TINY_SCENARIO, write_space
from mlflow.tracking import MlflowClient

from sweeper import study as studies
from sweeper.attempts import Deadlines, mark_started
from sweeper.cli import main
from sweeper.resources import wait_first
from sweeper.result import TrialResult
from sweeper.space import load_space
from sweeper.tracking import tracking_uri

ROOT = Path(__file__).resolve().parents[1]
SWEEPER = [sys.executable, "-m", "sweeper.cli"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SWEEPER, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _error(capsys: pytest.CaptureFixture) -> str:
    """The one line the CLI wrote for an error (rich's empty live view aside)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.fault("`cpus_per_trial: 64` (or `memory_per_trial_mb` beyond any node) on a "
                   "2-CPU cluster", "refused before anything starts: one line, exit 2, no store")
def test_resources_no_node_has_are_refused_before_anything_starts(
        tmp_path: Path, ray_cluster: str, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (64, {}, re.escape("scenario.cpus_per_trial 64 exceeds the largest node of this Ray "
                           "cluster (2 CPUs)")),
        (1, {"memory_per_trial_mb": 10**8}, re.escape(
            "budget.memory_per_trial_mb 100000000 exceeds the memory Ray offers on any node "
            "with 1 CPUs (") + r"\d+ MiB\)"),
    ]
    store = tmp_path / "store"
    for cpus, budget, message in cases:
        space = write_space(tmp_path / "s.yaml", budget={"trials": 1, **budget},
                            scenario={**TINY_SCENARIO, "cpus_per_trial": cpus})
        assert main(["pareto", "--space", str(space), "--store", str(store),
                     "--ray-address", ray_cluster, "--no-dashboard"]) == 2
        assert re.fullmatch(re.escape(f"sweeper: error: {space}: ") + message, _error(capsys))
        assert not store.exists()
        assert ray.is_initialized()  # a cluster the sweep did not start is left alone


@pytest.mark.fault("every CPU held by another job while a trial is submitted",
                   "the trial waits, with a 'waiting for N CPUs' line; runs once freed, "
                   "its trial_timeout_s counted from then")
def test_busy_cpus_wait_with_a_visible_line(ray_cluster: str) -> None:
    @ray.remote(num_cpus=2)
    def other_job(seconds: float) -> None:
        time.sleep(seconds)

    @ray.remote(num_cpus=1)
    def trial() -> str:
        mark_started()
        time.sleep(3.0)  # long enough to be seen running after the wait
        return "ran"

    held = other_job.remote(6.0)
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) > 0:  # the other job holds both CPUs
        assert time.time() < deadline, "the placeholder job never started"
        time.sleep(0.1)
    lines: list[str] = []
    ref = trial.remote()
    deadlines = Deadlines(limit_s=4.5)  # < its 6 s in the queue, > its 3 s of running
    deadlines.started(ref)
    wait_first([ref], 1, lines.append, check_s=0.5)
    waiting = ("waiting for 1 CPU: 1 trial(s) queued, 0 of the cluster's 2 CPUs free (other "
               "work holds them)")
    assert lines and lines[0] == waiting, lines
    assert lines[-1] == "CPUs free: the waiting trial(s) started", lines
    assert set(lines) == {waiting, lines[-1]}, lines
    assert ray.get(ref) == "ran"  # the queue's wait did not count toward its time limit
    assert not deadlines.killed
    deadlines.close()
    ray.get(held)


@pytest.mark.fault("`--set` outside the space's range or choices, or the catalogue's limits",
                   "refused in one line naming key, value and bounds, exit 2 (`--force`: "
                   "runs, tagged outside the space)")
def test_set_outside_the_space_is_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path / "s.yaml")
    cases = [
        (["--set", "lr=0.5"], f"{space}: --set lr=0.5: not within [0.01, 0.1], the space's "
                              "leverages.lr; --force runs it anyway, tagged outside the space"),
        (["--set", "update_codec=int4"], f"{space}: --set update_codec=int4: not one of "
                                         "['none', 'fp16', 'int8'], the space's leverages."
                                         "update_codec; --force runs it anyway, tagged "
                                         "outside the space"),
        (["--set", "lr=1000", "--force"], "--set lr=1000: not within [1e-06, 10] (the "
                                          "catalogue's limits; --force does not lift them)"),
        (["--set", "lr=nan", "--force"], "--set lr=nan: not within [1e-06, 10] (the "
                                         "catalogue's limits; --force does not lift them)"),
        (["--set", "clients_per_round=3", "--force"], "--set clients_per_round=3: not within "
                                                      "[1, 2] (scenario.num_clients; --force "
                                                      "does not lift them)"),
    ]
    store = tmp_path / "store"
    for args, message in cases:
        assert main(["trial", "--space", str(space), *args, "--store", str(store)]) == 2
        assert _error(capsys) == "sweeper: error: " + message
        assert not store.exists()


@pytest.mark.fault("`clients_per_round: {low: 2, high: 4}` with `num_clients: 2`",
                   "refused at load: one line, exit 2, no store")
def test_more_clients_per_round_than_clients_is_refused_at_load(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path / "s.yaml", leverages={
        "clients_per_round": {"low": 2, "high": 4}})
    store = tmp_path / "store"
    assert main(["pareto", "--space", str(space), "--store", str(store)]) == 2
    assert _error(capsys) == (f"sweeper: error: {space}: leverages.clients_per_round.high: 4 "
                              "exceeds scenario.num_clients (2)")
    assert not store.exists()
    fixed = write_space(tmp_path / "f.yaml", leverages={"clients_per_round": {"value": 3}})
    with pytest.raises(Exception, match=r"clients_per_round.value: 3 exceeds scenario.num_"):
        load_space(fixed)


@pytest.mark.fault("`--resume nosuch` (and `report nosuch`) in an empty folder",
                   "one line, exit 2, no store file created")
def test_an_unknown_sweep_creates_no_store(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    space = write_space(tmp_path / "s.yaml")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)  # the default store, ./mlruns (in-process: the suite's budget)
    refused = ("sweeper: error: no sweep named 'nosuch' in mlruns (no optuna.db there); "
               "`sweeper list --store mlruns` lists the sweeps there")
    assert main(["pareto", "--space", str(space), "--resume", "nosuch"]) == 2
    assert _error(capsys) == refused
    assert list(empty.iterdir()) == []
    assert main(["report", "nosuch"]) == 2
    assert _error(capsys) == refused
    assert list(empty.iterdir()) == []


def _strict(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.fault("a learning rate that makes training diverge (`--set lr=10 "
                   "local_epochs=2 --force`)",
                   "status `diverged` with the round in its reason; strict JSON (NaN as "
                   "null); the run tagged outside the space")
def test_a_diverging_trial_is_a_diverged_result_in_strict_json(tmp_path: Path) -> None:
    space = write_space(tmp_path / "s.yaml", scenario={**TINY_SCENARIO, "rounds": 2})
    store = tmp_path / "store"
    done = _run(["trial", "--space", str(space), "--set", "lr=10", "--set", "local_epochs=2",
                 "--force", "--json", "--store", str(store)], cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    out = _strict(done.stdout)
    result = out["result"]
    assert result["status"] == "diverged"
    assert result["reason"] in ("round 1: training loss is nan", "round 1: test loss is nan",
                                "round 1: training loss is inf"), result["reason"]
    assert len(result["rounds"]) == 1  # stopped there: a NaN model never comes back
    assert result["rounds"][0]["loss"] is None
    assert result["info"]["outside_space"] == [
        "lr=10: not within [0.01, 0.1], the space's leverages.lr"]
    run = MlflowClient(tracking_uri(store)).get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweeper.status"] == "diverged"
    assert run.data.tags["sweeper.reason"] == result["reason"]
    assert run.data.tags["sweeper.outside_space"] == result["info"]["outside_space"][0]


@pytest.mark.fault("a configuration of a sweep diverges; another was interrupted",
                   "Optuna told FAIL with status and reason; `sweeper list` counts each in "
                   "its own column, not as failed")
def test_diverged_and_interrupted_trials_have_their_own_columns(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    space = load_space(write_space(tmp_path / "s.yaml"))
    store = tmp_path / "store"
    store.mkdir()
    study = studies.open_study(space, "s", store, create=True)
    outcomes = [TrialResult(status="diverged", reason="round 1: test loss is nan"),
                TrialResult.failed("ValueError: boom")]
    for result in outcomes:
        trial = study.ask()
        space.sample(trial)
        studies.tell(study, trial, space, result)
    cut = study.ask()
    cut.set_user_attr(studies.INTERRUPTED_ATTR, True)
    told = study.get_trials()
    assert [t.state for t in told[:2]] == [optuna.trial.TrialState.FAIL] * 2
    assert told[0].user_attrs["status"] == "diverged"
    assert told[0].user_attrs["reason"] == "round 1: test loss is nan"
    assert told[1].user_attrs["reason"] == "ValueError: boom"
    assert [studies.outcome(t) for t in told] == ["diverged", "failed", "interrupted"]
    assert studies.summaries(store)[0][:7] == ("s", 0, 1, 1, 1, 0, 0)
    assert main(["list", "--store", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, row = ([c.strip() for c in lines[i].strip("┃│ ").split(bar)]
                   for i, bar in ((2, "┃"), (4, "│")))
    shown = dict(zip(header, row, strict=True))
    assert {k: shown[k] for k in studies.OUTCOMES} == {
        "complete": "0", "failed": "1", "diverged": "1", "interrupted": "1", "pruned": "0",
        "running": "0"}
