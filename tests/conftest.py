"""Shared fixtures: one real local Ray for the session, a tiny synthetic corpus, tiny spaces."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import ray
import yaml

from sweeper.study import storage_url

TINY_SCENARIO = {
    "dataset": "synthetic",
    "corpus_speakers": 8,
    "corpus_takes": 2,
    "num_clients": 2,
    "partition": "speaker",
    "rounds": 2,
    "engine": "simulation",
    "cpus_per_trial": 1,
    "seed": 0,
}


@pytest.fixture(scope="session", autouse=True)
def sweeper_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Corpus and feature caches live in one session folder (set before Ray starts, so its
    workers inherit it)."""
    cache = tmp_path_factory.mktemp("sweeper-cache")
    os.environ["SWEEPER_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def ray_cluster(sweeper_cache: Path):
    """A real local Ray (Ray 2.55 has no local_mode): two CPUs, no dashboard."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_space(path: Path, **overrides) -> Path:
    """A tiny valid space; keyword arguments replace top-level sections."""
    space = {
        "name": "tiny",
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "energy_j", "direction": "minimize"}],
        "budget": {"trials": 4, "parallel": 2},
        "sampler": {"name": "random", "seed": 1},
        "scenario": dict(TINY_SCENARIO),
        "leverages": {
            "precision": {"choices": ["fp32", "bf16"]},
            "update_codec": {"choices": ["none", "fp16", "int8"]},
            "local_epochs": {"low": 1, "high": 2},
            "lr": {"low": 0.01, "high": 0.1, "log": True},
        },
    }
    space.update(overrides)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


GRID = {"precision": {"choices": ["fp32", "bf16"]},
        "update_codec": {"choices": ["none", "int8"]}}


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str):
    """A finished grid sweep of 2 x 2 leverages (`sweeper pareto`, its report written),
    shared by the modules that read a sweep's stores: (store, space)."""
    from sweeper.cli import main
    from sweeper.space import load_space

    root = tmp_path_factory.mktemp("grid")
    store = root / "store"
    space_file = write_space(root / "grid.yaml", leverages=GRID,
                             sampler={"name": "grid", "seed": 0},
                             budget={"trials": 4, "parallel": 2})
    assert main(["pareto", "--space", str(space_file), "--store", str(store), "--name",
                 "grid", "--ray-address", ray_cluster]) == 0
    return store, load_space(space_file)


def kill_driver_when(cmd: list[str], store: Path, sweep: str, ready, log: Path,
                     timeout_s: float = 300) -> optuna.Study:
    """Start a sweep driver (`cmd` plus `--name sweep`), SIGKILL it as soon as
    `ready(study)` holds (a string: the sweep ended first, say why), and return the study as
    the kill left it."""
    with log.open("w") as out:
        driver = subprocess.Popen([*cmd, "--name", sweep], stdout=out, stderr=out)
        try:
            wait_for_study(store, sweep, ready, log, timeout_s)
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
    return optuna.load_study(study_name=sweep, storage=storage_url(store))


def wait_for_study(store: Path, sweep: str, ready, log: Path,
                   timeout_s: float = 300) -> optuna.Study:
    """Poll the sweep's study until `ready(study)` holds (a string: it never will, say
    why); fail with the end of the driver's `log` on timeout."""
    from sweeper.study import storage

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        time.sleep(0.05)
        if not (store / "optuna.db").exists():
            continue  # and not made here: the driver makes it, under the store's lock
        try:
            study = optuna.load_study(study_name=sweep, storage=storage(store))
        except Exception:  # not created yet
            continue
        verdict = ready(study)
        if isinstance(verdict, str):
            pytest.fail(verdict)
        if verdict:
            return study
    pytest.fail("the driver never reached the state awaited: " + log.read_text()[-3000:])


def assert_stores_agree(store: Path, sweep: str, repeats: int = 1) -> optuna.Study:
    """The invariants every fault must keep: each finished Optuna trial has its MLflow child
    run(s) and no child run is an orphan; no configuration ran twice (unless repeated)."""
    from sweeper.study import is_finished
    from sweeper.tracking import Tracker

    study = optuna.load_study(study_name=sweep, storage=storage_url(store))
    tracker = Tracker(store)
    logged = tracker.logged_repeats(tracker.sweep_run(sweep, create=False))
    finished = {t.number for t in study.trials if is_finished(t)}
    assert {number for number, _ in logged} == finished, (sorted(logged), sorted(finished))
    for number in finished:
        assert {r for n, r in logged if n == number} == set(range(repeats)), number
    params = [tuple(sorted(t.params.items())) for t in study.trials if is_finished(t)]
    assert len(params) == len(set(params)), f"a configuration ran twice: {params}"
    return study
