"""Store faults (issue 19): stores created by sweeps started together, stores read while a
sweep runs or locked while it logs, corrupt, read-only and full stores. Real Ray, real
SQLite stores, the real command line; one pair of tiny sweeps is run once and its store
copied for each fault that needs finished trials."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from conftest import TINY_SCENARIO, assert_stores_agree, write_space
from optuna.trial import FrozenTrial, TrialState
from ray.util.placement_group import placement_group, remove_placement_group

from sweeper import artifact_store
from sweeper import study as studies
from sweeper.cli import main
from sweeper.tracking import Tracker

SWEEPS = ("a", "b")
TRIALS = 1  # per sweep: two sweeps fill the cluster's two CPUs at once
REPORT_FILES = ("pareto.csv", "pareto.png", "pareto.html", "pareto_rounds.csv",
                "hypervolume.csv", "hypervolume.png", "importances.json")


def sweeper(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweeper.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def sweepers(*commands: list[str | Path]) -> list[subprocess.CompletedProcess[str]]:
    """Several `sweeper` commands run at the same time (as users in other terminals)."""
    running = [subprocess.Popen([sys.executable, "-m", "sweeper.cli", *map(str, c)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in commands]
    outputs = [p.communicate(timeout=300) for p in running]
    return [subprocess.CompletedProcess(p.args, p.returncode, *out)
            for p, out in zip(running, outputs, strict=True)]


def error_line(proc: subprocess.CompletedProcess[str], named: Path, alone: bool = True) -> str:
    """The one line a store fault is told in: exit 2, no traceback, the file named; `alone`:
    nothing else on stderr (a sweep's driver also draws its live view there)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    # (after a sweep's live view, the line may follow its last frame: Rich ends that frame
    # with a newline on terminals only)
    errors = [line[line.index("sweeper: error:"):] for line in proc.stderr.splitlines()
              if "sweeper: error:" in line]
    assert len(errors) == 1 and str(named) in errors[0], proc.stderr[-3000:]
    if alone:
        assert proc.stderr.strip() == errors[0]
    return errors[0]


def trials(store: Path, sweep: str) -> list[FrozenTrial]:
    """The sweep's trials; none before it exists."""
    if not (store / "optuna.db").exists():
        return []
    try:
        return optuna.load_study(study_name=sweep, storage=studies.storage(store)).trials
    except KeyError:
        return []


def queued(store: Path) -> bool:
    """Both sweeps made, their trials asked (RUNNING), none finished."""
    states = [[t.state for t in trials(store, s)] for s in SWEEPS]
    return all(s and set(s) == {TrialState.RUNNING} for s in states)


def start_driver(cmd: list[str], log: Path) -> subprocess.Popen:
    """A sweep's driver, its stdout and stderr in `log` (.out, .err)."""
    with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err)


def wait_for(condition, drivers: dict[Path, subprocess.Popen], what: str,
             timeout_s: float = 240) -> None:
    """Poll `condition` until it holds; fail (with the drivers' logs) if a driver ends or
    time runs out first."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and all(d.poll() is None for d in drivers.values()):
        if condition():
            return
        time.sleep(0.25)
    pytest.fail(f"waiting for {what}: " + "\n".join(
        log.with_suffix(".err").read_text()[-2000:] for log in drivers))


def parent_status(store: Path, sweep: str) -> str:
    tracker = Tracker(store)
    return tracker.client.get_run(tracker.sweep_run(sweep, create=False)).info.status


def report_dir(store: Path, sweep: str) -> Path:
    tracker = Tracker(store)
    uri = tracker.client.get_run(tracker.sweep_run(sweep, create=False)).info.artifact_uri
    return artifact_store.local_path(uri, store.resolve())


@dataclass
class TwoSweeps:
    store: Path
    space: Path
    drivers: list[subprocess.CompletedProcess[str]]
    early_list: subprocess.CompletedProcess[str]
    early_report: subprocess.CompletedProcess[str]
    early_trials: list[FrozenTrial]


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> TwoSweeps:
    """Two sweeps started at once on a new store. While every CPU of the cluster is held
    (Ray queues their trials), `sweeper list` and `sweeper report a` run; then the CPUs are
    freed, and another process holds an exclusive lock on mlflow.db from before the first
    trial finishes until 2 s after (Optuna is told first: the driver then waits to log)."""
    folder = tmp_path_factory.mktemp("two-sweeps")
    store = folder / "store"
    space = write_space(folder / "tiny.yaml", budget={"trials": TRIALS, "parallel": 1},
                        scenario={**TINY_SCENARIO, "rounds": 1})
    held = placement_group([{"CPU": 2}])
    assert held.wait(60)
    drivers = {folder / name: start_driver(
        [sys.executable, "-m", "sweeper.cli", "pareto", "--space", str(space), "--store",
         str(store), "--name", name, "--ray-address", ray_cluster], folder / name)
        for name in SWEEPS}
    try:
        wait_for(lambda: queued(store), drivers, "both sweeps' trials to be queued")
        early_list, early_report = sweepers(["list", "--store", store],
                                            ["report", "a", "--store", store])
        early_trials = trials(store, "a")
        lock = sqlite3.connect(store / "mlflow.db", timeout=60, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        remove_placement_group(held)
        held = None
        wait_for(lambda: any(t.state == TrialState.COMPLETE for s in SWEEPS
                             for t in trials(store, s)), drivers, "a finished trial")
        time.sleep(2)
        lock.execute("COMMIT")
        lock.close()
        done = [subprocess.CompletedProcess(d.args, d.wait(300),
                                            log.with_suffix(".out").read_text(),
                                            log.with_suffix(".err").read_text())
                for log, d in drivers.items()]
    finally:
        if held is not None:
            remove_placement_group(held)
        for driver in drivers.values():
            driver.kill()
            driver.wait()
    return TwoSweeps(store, space, done, early_list, early_report, early_trials)


@pytest.mark.fault("two sweeps started at once on a new store",
                   "store creation serialised under a file lock: both finish")
def test_two_sweeps_started_at_once_on_a_new_store(two_sweeps: TwoSweeps) -> None:
    for driver in two_sweeps.drivers:
        assert driver.returncode == 0, driver.stderr[-3000:]
        assert "Traceback" not in driver.stderr
    for sweep in SWEEPS:
        study = assert_stores_agree(two_sweeps.store, sweep)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * TRIALS
        assert parent_status(two_sweeps.store, sweep) == "FINISHED"


@pytest.mark.fault("`sweeper report` and `list` before any trial finished",
                   "exit 0: an empty front, every sweep listed")
def test_report_and_list_before_any_trial_finished(two_sweeps: TwoSweeps) -> None:
    assert {t.state for t in two_sweeps.early_trials} == {TrialState.RUNNING}
    for proc in (two_sweeps.early_list, two_sweeps.early_report):
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    listed = two_sweeps.early_list.stdout
    assert all(f"│ {sweep} " in listed for sweep in SWEEPS), listed
    assert "Pareto" in two_sweeps.early_report.stdout
    assert "hypervolume after" not in two_sweeps.early_report.stdout  # nothing finished


@pytest.mark.fault("mlflow.db locked by another process while the sweep logs",
                   "waits (bounded: 20 s), then logs; nothing lost")
def test_mlflow_db_locked_while_the_sweep_logs(two_sweeps: TwoSweeps) -> None:
    # the fixture held the lock until 2 s after a trial was told to Optuna
    for driver in two_sweeps.drivers:
        assert driver.returncode == 0 and "locked" not in driver.stderr, driver.stderr[-3000:]
    for sweep in SWEEPS:
        assert len(assert_stores_agree(two_sweeps.store, sweep).trials) == TRIALS


def copy_of(two_sweeps: TwoSweeps, folder: Path) -> Path:
    """A copy of the sweeps' store, its artifacts its own (already so with `mlflow-artifacts:`
    locations; rewritten for `file:` ones, which are absolute)."""
    store = Path(shutil.copytree(two_sweeps.store, folder / "store"))
    old, new = two_sweeps.store.resolve().as_uri(), store.resolve().as_uri()
    with closing(sqlite3.connect(store / "mlflow.db")) as db, db:
        db.execute("UPDATE experiments SET artifact_location = "
                   "replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    return store


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.fault("optuna.db truncated",
                   "`list`, `--resume`: exit 2, one line naming optuna.db")
def test_truncated_optuna_db(two_sweeps: TwoSweeps, tmp_path: Path, ray_cluster: str) -> None:
    store = copy_of(two_sweeps, tmp_path)
    truncate(store / "optuna.db")
    listed, resumed = sweepers(["list", "--store", store],
                               ["pareto", "--space", two_sweeps.space, "--resume", "a",
                                "--store", store, "--ray-address", ray_cluster])
    for line in (error_line(listed, store / "optuna.db"),
                 error_line(resumed, store / "optuna.db", alone=False)):
        assert "corrupt" in line


@pytest.mark.fault("mlflow.db truncated, then a new sweep started",
                   "exit 2, one line naming mlflow.db; no empty sweep left behind")
def test_truncated_mlflow_db(two_sweeps: TwoSweeps, tmp_path: Path, ray_cluster: str) -> None:
    store = copy_of(two_sweeps, tmp_path)
    truncate(store / "mlflow.db")
    started = sweeper("pareto", "--space", two_sweeps.space, "--name", "c", "--store", store,
                      "--ray-address", ray_cluster)
    assert "corrupt" in error_line(started, store / "mlflow.db", alone=False)
    # "c" was removed (Optuna lists studies in no guaranteed order)
    assert sorted(optuna.get_all_study_names(studies.storage(store))) == sorted(SWEEPS)


@contextmanager
def mounted(folder: Path, *how: str) -> Iterator[None]:
    """`mount *how folder` for the test (root only: skipped elsewhere), unmounted after."""
    made = subprocess.run(["mount", *how, str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.fault("store on a read-only file system",
                   "`list` works; `report`: exit 2, one line naming the file")
def test_read_only_store(two_sweeps: TwoSweeps, tmp_path: Path) -> None:
    store = copy_of(two_sweeps, tmp_path)
    with mounted(store, "--bind", str(store)):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(store)], check=True)
        listed, reported = sweepers(["list", "--store", store], ["report", "a", "--store", store])
        assert listed.returncode == 0 and "│ a " in listed.stdout, listed.stderr[-3000:]
        line = error_line(reported, store)
    assert "read-only" in line


@pytest.mark.fault("disk full during the final report (tmpfs)",
                   "exit 2, one line; sweep's run FAILED, trials kept; `report` finishes it")
def test_disk_full_during_the_final_report(two_sweeps: TwoSweeps, tmp_path: Path,
                                           ray_cluster: str) -> None:
    store = copy_of(two_sweeps, tmp_path)
    # The artifacts on a disk of their own (the databases stay writable: the run's status
    # can be set), holding the sweeps' artifacts and 16 kB more: the report's plots
    # (~60 kB of PNG) will not fit.
    kept = Path(shutil.move(store / "artifacts", tmp_path / "artifacts"))
    disk = store / "artifacts"
    disk.mkdir()
    with mounted(disk, "-t", "tmpfs", "-o", "size=64m", "tmpfs"):
        shutil.copytree(kept, disk, dirs_exist_ok=True)
        # a sweep whose trials are done but its report never written (its driver was killed)
        for name in REPORT_FILES:
            (report_dir(store, "b") / name).unlink()
        size = shutil.disk_usage(disk).used + 16_000
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)
        proc = sweeper("pareto", "--space", two_sweeps.space, "--resume", "b", "--store",
                       store, "--ray-address", ray_cluster)
        line = error_line(proc, report_dir(store, "b"), alone=False)
        assert "disk full" in line and f"sweeper report b --store {store}" in line
        assert parent_status(store, "b") == "FAILED"
        assert len(assert_stores_agree(store, "b").trials) == TRIALS
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        # the same command in-process (the fault's own line was the CLI's, above)
        assert main(["report", "b", "--store", str(store)]) == 0
        assert parent_status(store, "b") == "FINISHED"
        assert (report_dir(store, "b") / "pareto.png").stat().st_size > 16_000
