"""No cold start in any trial's joules: the first trial of a fresh process (a Ray worker, a
`sweeper trial`) costs what the same configuration costs later, so energy reproduces and a
leverage's effect is not drowned by the process's start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean

import optuna
import pytest
from conftest import TINY_SCENARIO, write_space
from mlflow.tracking import MlflowClient

from sweeper.config import Scenario
from sweeper.energy import load_profiles
from sweeper.study import storage_url, stored_repeats
from sweeper.tracking import tracking_uri

SWEEPER = [sys.executable, "-m", "sweeper.cli"]
# The bounds sit between the machine's noise and the cold start. The same tiny trial's
# CPU time varies by about 7% from run to run in one process and 13-18% between fresh
# processes on this 2-core VM (benchmarks/data_fraction.py; a rerun in a fresh process
# came out 6% off in CI), so the 5% would fail by chance; `benchmarks/cold_start.py`
# shows the 5%-level result (1.02x). A billed cold start is additive and large: a worker's
# first warm-up costs ~2 CPU-s more than a later one, several times a tiny trial (11.7 J
# against 1.8 J with the warm-ups removed). Each test also checks its power: the cold
# start it measured, had it been billed, would exceed its bound at least twofold.
SAME_PROCESS = 0.25  # a worker's first trial against its later ones
FRESH_PROCESS = 0.5  # a rerun in a fresh process against the logged trial
REPEATS = 4


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([*SWEEPER, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _billed_j(cpu_s: float) -> float:
    """What `cpu_s` CPU-seconds of cold start would add to a trial's modeled energy."""
    return cpu_s * load_profiles().hosts[Scenario().host_profile].watts_per_core


def test_a_workers_first_trial_costs_what_a_later_one_does_and_a_rerun_reproduces_it(
        tmp_path: Path) -> None:
    """One configuration repeated on a Ray of its own, one trial at a time: repeat 0 is the
    first trial of a fresh worker (cold), the next ones run warm in the same worker. Their
    warm-ups differ by the process's cold start, and none of it may be in the joules: the
    cold trial costs what the warm ones do. Then a warm repeat re-run in a fresh process
    (`trial --from-run`): the same accuracy, the same joules, the difference printed."""
    space = write_space(tmp_path / "same.yaml", budget={"trials": 1, "parallel": 1,
                                                          "repeats": REPEATS},
                        scenario={**TINY_SCENARIO, "rounds": 1, "partition": "iid"},
                        leverages={"precision": {"value": "bf16"},
                                   "local_epochs": {"value": 1}})
    store = ["--store", str(tmp_path / "store")]
    _run(["pareto", "--space", str(space), *store, "--name", "same", "--no-dashboard"])
    study = optuna.load_study(study_name="same", storage=storage_url(tmp_path / "store"))
    (trial,) = study.trials
    results = stored_repeats(trial)
    assert sorted(results) == list(range(REPEATS))
    assert [r.status for r in results.values()] == ["ok"] * REPEATS
    pids = [results[r].info["placement"]["pid"] for r in range(REPEATS)]
    assert len(set(pids)) == 1, f"the repeats ran in several workers: {pids}"
    cold, warm = results[0], [results[r] for r in range(1, REPEATS)]
    cold_start_cpu_s = cold.info["warmup_cpu_s"] - max(r.info["warmup_cpu_s"] for r in warm)
    warm_j = mean(r.energy_j for r in warm)
    bound_j = SAME_PROCESS * warm_j
    assert _billed_j(cold_start_cpu_s) >= 2 * bound_j, "no cold start to keep out: no power"
    assert abs(cold.energy_j - warm_j) <= bound_j, (cold.energy_j, [r.energy_j for r in warm])

    client = MlflowClient(tracking_uri(tmp_path / "store"))
    runs = client.search_runs([client.get_experiment_by_name("same").experiment_id],
                              "tags.`sweeper.repeat` = '1'")
    (logged,) = runs
    again = json.loads(_run(["trial", "--from-run", logged.info.run_id, "--json",
                             *store]).stdout)
    assert again["new"]["accuracy"] == again["old"]["accuracy"] == results[1].accuracy
    bound_j = FRESH_PROCESS * again["old"]["energy_j"]
    fresh_cold_start_cpu_s = again["new"]["warmup_cpu_s"] - again["old"]["warmup_cpu_s"]
    assert _billed_j(fresh_cold_start_cpu_s) >= 2 * bound_j, ("no power", again)
    change_j = again["new"]["energy_j"] - again["old"]["energy_j"]
    assert abs(change_j) <= bound_j, again
    assert again["relative_change"]["energy_j"] == pytest.approx(
        again["new"]["energy_j"] / again["old"]["energy_j"] - 1)


# One trial's client CPU time varies by 10-25% from run to run on this 2-core VM, for the
# same configuration (BENCHMARKS.md, `benchmarks/data_fraction.py`: the full-data trials'
# coefficient of variation was 18%). Half the data gave 0.34x to 0.64x of the full data's
# joules over 8 fresh-process pairs (0.48x on average); billing the process's cold start
# gave about 0.91x (the report). The bound sits between the two.
HALF_BOUND = 0.75


def test_half_the_data_shows_in_one_trial_in_a_fresh_process(tmp_path: Path) -> None:
    """`data_fraction: 0.5` (random selection) cuts the clients' training joules in one
    `sweeper trial`, each in a fresh process: the process's cold start must not drown it."""
    space = write_space(tmp_path / "s.yaml", scenario={**TINY_SCENARIO, "rounds": 1},
                        leverages={"local_epochs": {"value": 10},
                                   "data_fraction": {"low": 0.1, "high": 1.0},
                                   "summary": {"choices": ["random"]}})

    def client_j(fraction: str) -> float:
        out = _run(["trial", "--space", str(space), "--store", str(tmp_path / "store"),
                    "--set", f"data_fraction={fraction}", "--json"]).stdout
        result = json.loads(out)["result"]
        assert result["status"] == "ok", result["reason"]
        return sum(r["energy"]["client_compute_j"] for r in result["rounds"])

    full, half = client_j("1.0"), client_j("0.5")
    assert half <= HALF_BOUND * full, (full, half)
