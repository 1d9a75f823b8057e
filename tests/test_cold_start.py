"""No cold start in any trial's joules: the first trial of a fresh process (a Ray worker, a
`sweeper trial`) costs what the same configuration costs later, so energy reproduces and a
leverage's effect is not drowned by the process's start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

import optuna
import pytest
from conftest import TINY_SCENARIO, write_space

from sweeper.energy import load_profiles
from sweeper.space import load_space
from sweeper.study import RUN_ID_ATTR, storage_url, stored_result
from sweeper.trial import prepare, run_trial

SWEEPER = [sys.executable, "-m", "sweeper.cli"]
# Why the bounds are in CPU-seconds of the cold start, not in % of a trial: the same epoch's
# CPU time went from 0.09 to 0.16 CPU-s on this 2-core machine as other work came and went
# (and a trial's energy by 13% between two runs on CI), while the cold start is a fixed
# ~2 CPU-s (benchmarks/cold_start.py). Billed, it shows whole; kept out, what remains is
# noise: the tests allow half of the cold start each run measured.
KEPT_OUT = 0.5


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([*SWEEPER, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _watts_per_core() -> float:
    return load_profiles().hosts["laptop"].watts_per_core


def test_a_workers_first_trial_costs_what_a_later_one_does_and_a_rerun_reproduces_it(
        tmp_path: Path) -> None:
    """Three configurations of the same compute (they differ in the learning rate only: a
    sweep never runs one configuration twice) on a Ray of its own (fresh workers, one trial
    at a time). A worker's first trial warms up cold, the next ones warm: the difference of
    their warm-ups is the process's cold start, and none of it may be in the joules. Then a
    later (warm) trial re-run in a fresh process: the same accuracy, and its joules differ
    by less than the fresh process's cold start would add."""
    space = write_space(tmp_path / "same.yaml", budget={"trials": 3, "parallel": 1},
                        sampler={"name": "grid", "seed": 0},
                        scenario={**TINY_SCENARIO, "rounds": 1},
                        leverages={"precision": {"value": "bf16"},
                                   "local_epochs": {"value": 1},
                                   "lr": {"low": 0.01, "high": 0.03, "step": 0.01}})
    store = ["--store", str(tmp_path / "store")]
    _run(["pareto", "--space", str(space), *store, "--name", "same", "--no-dashboard"])
    study = optuna.load_study(study_name="same", storage=storage_url(tmp_path / "store"))
    trials = sorted(study.trials, key=lambda t: t.number)
    results = [stored_result(t) for t in trials]
    assert [r.status for r in results] == ["ok"] * 3
    pids = [r.info["placement"]["pid"] for r in results]
    cold = [r for i, r in enumerate(results) if pids[i] not in pids[:i]]
    warm = [r for i, r in enumerate(results) if pids[i] in pids[:i]]
    assert warm, f"no worker ran a second trial: nothing compared ({pids})"
    cold_start_cpu_s = (median(r.info["warmup_cpu_s"] for r in cold)
                        - median(r.info["warmup_cpu_s"] for r in warm))
    assert cold_start_cpu_s >= 0.5, "no cold start to keep out: the test would prove nothing"
    excess_j = median(r.energy_j for r in cold) - median(r.energy_j for r in warm)
    assert excess_j <= KEPT_OUT * cold_start_cpu_s * _watts_per_core(), (
        excess_j, cold_start_cpu_s, [r.energy_j for r in results])
    sent = [r.bytes_total for r in results]  # the same work on the wire (but lr's digits)
    assert max(sent) - min(sent) <= 64, sent

    logged = next(i for i in reversed(range(3)) if pids[i] in pids[:i])
    again = json.loads(_run(["trial", "--from-run", trials[logged].user_attrs[RUN_ID_ATTR],
                             "--json", *store]).stdout)
    assert again["new"]["accuracy"] == again["old"]["accuracy"] == results[logged].accuracy
    fresh_cold_start_cpu_s = again["new"]["warmup_cpu_s"] - again["old"]["warmup_cpu_s"]
    assert fresh_cold_start_cpu_s >= 0.5, again
    change_j = again["new"]["energy_j"] - again["old"]["energy_j"]
    assert abs(change_j) <= KEPT_OUT * fresh_cold_start_cpu_s * _watts_per_core(), again
    assert again["relative_change"]["energy_j"] == pytest.approx(
        again["new"]["energy_j"] / again["old"]["energy_j"] - 1)


def test_a_quarter_of_the_data_shows_in_one_trial(tmp_path: Path) -> None:
    """`data_fraction` (random selection) cuts the clients' training joules in the trial
    itself, not only on average over a sweep."""
    space = load_space(write_space(tmp_path / "s.yaml",
                                   scenario={**TINY_SCENARIO, "rounds": 1},
                                   leverages={"local_epochs": {"value": 3},
                                              "data_fraction": {"low": 0.1, "high": 1.0},
                                              "summary": {"choices": ["random"]}}))
    prepare(space.scenario, space.seed)

    def client_j(fraction: str) -> float:
        config = space.trial_config(space.with_overrides({"data_fraction": fraction}))
        result = run_trial(config)
        assert result.status == "ok", result.reason
        return result.rounds[-1].energy["client_compute_j"]

    full, quarter = client_j("1.0"), client_j("0.25")
    assert quarter <= 0.6 * full, (full, quarter)  # a quarter of the work, noise aside
