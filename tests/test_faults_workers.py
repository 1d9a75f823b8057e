"""A Ray worker SIGKILLed in the middle of a trial (the kernel's OOM killer, an operator's
`kill -9`): Ray re-runs the task, and the re-run is recorded, not hidden."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY_SCENARIO, assert_stores_agree, write_space
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeper.attempts import RETRIES_KEY
from sweeper.cli import main
from sweeper.tracking import tracking_uri


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _descends_from_us(pid: int) -> bool:
    """A worker of this test process's own Ray (another checkout's tests may run trials on
    this machine too)."""
    while pid > 1:
        pid = _parent(pid)
        if pid == os.getpid():
            return True
    return False


def _trial_workers() -> list[int]:
    """Our Ray's processes running a trial (Ray titles a busy worker by its task)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if ((proc / "cmdline").read_bytes().startswith(b"ray::trial-")
                    and _descends_from_us(int(proc.name))):
                found.append(int(proc.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return found


def _kill_one_trial_worker(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first trial worker seen running for a second (mid-trial, past start-up)."""
    seen: dict[int, float] = {}
    while not stop.wait(0.1):
        now = time.monotonic()
        for pid in _trial_workers():
            if now - seen.setdefault(pid, now) >= 1.0:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return


@pytest.mark.fault("a Ray worker SIGKILLed mid-trial",
                   "Ray re-runs the trial; the re-run is counted on it (Optuna attr, MLflow "
                   "tag, `sweeper list`); the sweep finishes")
def test_a_killed_worker_is_retried_and_recorded(tmp_path: Path, ray_cluster: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path / "w.yaml", budget={"trials": 2, "parallel": 2},
                        scenario={**TINY_SCENARIO, "rounds": 4})
    store = tmp_path / "store"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_trial_worker, args=(killed, stop), daemon=True)
    killer.start()
    try:
        assert main(["pareto", "--space", str(space), "--store", str(store), "--name", "w",
                     "--no-dashboard"]) == 0
    finally:
        stop.set()
        killer.join()
    assert killed, "no trial ran long enough to be killed: rounds too short"
    study = assert_stores_agree(store, "w")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.user_attrs.get(RETRIES_KEY, 0) for t in study.trials) == [0, 1]
    retried = next(t for t in study.trials if t.user_attrs.get(RETRIES_KEY))
    client = MlflowClient(tracking_uri(store))
    run = client.search_runs([client.get_experiment_by_name("w").experiment_id],
                             f"tags.`sweeper.trial` = '{retried.number}'")[0]
    assert run.data.tags["sweeper.ray_retries"] == "1"
    capsys.readouterr()
    assert main(["list", "--store", str(store)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "│ w " in line)
    assert [cell.strip() for cell in row.strip("│").split("│")][1:-1][-1] == "1", row
