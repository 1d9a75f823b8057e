"""`sweeper ui` on a real sweep's store (real MLflow server and optuna-dashboard), and what
the UIs are given to show: small Optuna user attrs, the full result kept elsewhere and read
back by every path that reads it, artifacts that follow a copied store."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from conftest import TINY_SCENARIO, write_space
from mlflow.tracking import MlflowClient

from sweeper import study as studies
from sweeper.artifact_store import missing
from sweeper.cli import main
from sweeper.orchestrate import _relog_missing
from sweeper.result import TrialResult
from sweeper.tracking import Tracker, tracking_uri

SWEEP = "ui"
SMALL_ATTRS = {"status", "reason", "mlflow_run_id", "mlflow_run", "ray_retries",
               "pruned_after_round", "interrupted", "interruptions"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> Path:
    """A finished two-trial sweep (one round each), shared by this module's tests."""
    folder = tmp_path_factory.mktemp("ui")
    space = write_space(folder / "ui.yaml", budget={"trials": 2, "parallel": 2},
                        scenario={**TINY_SCENARIO, "rounds": 1})
    assert main(["pareto", "--space", str(space), "--store", str(folder / "store"),
                 "--name", SWEEP, "--ray-address", ray_cluster]) == 0
    return folder / "store"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (by parent links in /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _outside_address() -> str | None:
    """An address of this host that is not loopback (None: the host has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_ui_serves_the_sweep_on_loopback_and_stops_on_ctrl_c(store: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "ui", "--store", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = {}
        while "optuna-dashboard" not in urls:  # the MLflow UI, each sweep's page, optuna's
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-3000:]
            name, _, url = line.partition(": ")
            urls[name.strip()] = url.strip()
        mlflow_url, optuna_url = urls["MLflow UI"], urls["optuna-dashboard"]
        # the sweep's runs, in MLflow's model-training view (a bare URL opens on GenAI's)
        assert urls[SWEEP].startswith(f"{mlflow_url}/#/experiments/")
        assert urls[SWEEP].endswith("/runs?workflowType=machine_learning")
        children = _descendants(proc.pid)
        assert children

        experiments = _get(f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=100")
        assert SWEEP in [e["name"] for e in experiments["experiments"]]
        summaries = _get(f"{optuna_url}/api/studies")["study_summaries"]
        study_id = next(s["study_id"] for s in summaries if s["study_name"] == SWEEP)
        detail = _get(f"{optuna_url}/api/studies/{study_id}")
        assert detail["objective_names"] == ["accuracy", "energy_j"]
        assert len(detail["trials"]) == 2
        for trial in detail["trials"]:
            keys = {a["key"] for a in trial["user_attrs"]}
            assert "mlflow_run_id" in keys and keys <= SMALL_ATTRS, keys

        outside = _outside_address()
        for url in (mlflow_url, optuna_url):
            host, port = url.removeprefix("http://").split(":")
            assert host == "127.0.0.1"
            if outside is not None:  # bound to loopback: refused on the host's own address
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection((outside, int(port)), timeout=5).close()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, proc.stderr.read()[-3000:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)]
    for url in (mlflow_url, optuna_url):
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)


def test_bad_store_is_one_line_and_exit_2(tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    for folder, says in ((tmp_path / "absent", "no such folder"),
                         (tmp_path / "empty", "no sweeps")):
        assert main(["ui", "--store", str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(folder) in err and says in err, err


def test_small_user_attrs_and_the_result_still_read_back(store: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    study = optuna.load_study(study_name=SWEEP, storage=studies.storage_url(store))
    client = MlflowClient(tracking_uri(store))
    for trial in study.trials:
        assert studies.RESULT_ATTR not in trial.user_attrs
        assert not any(k.startswith(studies.REPEAT_ATTR) for k in trial.user_attrs)
        assert len(json.dumps(trial.user_attrs)) < 500, trial.user_attrs
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["sweeper.trial"] == str(trial.number)
        assert trial.user_attrs["mlflow_run"] == (  # the run's page, on any UI address
            f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            "?workflowType=machine_learning")
        result = studies.stored_result(trial)  # kept by Optuna, logged to MLflow separately
        assert result.accuracy == pytest.approx(run.data.metrics["final.accuracy"])
        assert [r.round for r in studies.stored_repeats(trial)[0].rounds] == [1]

    # the report reads every result back from Optuna
    assert main(["report", SWEEP, "--store", str(store)]) == 0
    assert "Pareto front of ui" in capsys.readouterr().out

    # a copy of the store: its artifacts are its own; a child run lost from MLflow is
    # logged again from the result Optuna kept, and the trial points to the new run
    copy = Path(shutil.copytree(store, tmp_path / "copy"))
    assert missing(copy) is None
    tracker = Tracker(copy)
    parent = tracker.sweep_run(SWEEP, create=False)
    lost = study.trials[0].user_attrs["mlflow_run_id"]
    saved = Path(tracker.client.download_artifacts(lost, "result.json", str(tmp_path)))
    assert json.loads(saved.read_text())["accuracy"] == pytest.approx(
        studies.stored_result(study.trials[0]).accuracy)
    tracker.client.delete_run(lost)
    copied = optuna.load_study(study_name=SWEEP, storage=studies.storage(copy))
    runs = _relog_missing(copied, tracker, parent, studies.space_of(copied))
    assert runs[0] != lost
    again = optuna.load_study(study_name=SWEEP, storage=studies.storage_url(copy))
    assert again.trials[0].user_attrs["mlflow_run_id"] == runs[0]
    relogged = tracker.client.get_run(runs[0])
    assert relogged.data.metrics["final.accuracy"] == pytest.approx(
        studies.stored_result(again.trials[0]).accuracy)

    # runs logged with absolute `file:` locations, then the store moved: said in one line
    with closing(sqlite3.connect(copy / "mlflow.db")) as db, db:
        db.execute("UPDATE runs SET artifact_uri = 'file:///gone/store/artifacts/x'")
    note = missing(copy)
    assert note is not None and "/gone/store/artifacts/x" in note and "\n" not in note


def test_a_store_from_before_reads_its_user_attr_results(tmp_path: Path) -> None:
    """Stores written before results moved to system attrs (and before repeats) resume."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db",
                                directions=["maximize", "minimize"])
    old = TrialResult.failed("boom").to_dict()
    for key in (studies.RESULT_ATTR, f"{studies.REPEAT_ATTR}0"):
        trial = study.ask()
        trial.set_user_attr(key, json.dumps({**old, "reason": key}))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    first, second = optuna.load_study(study_name=study.study_name,
                                      storage=f"sqlite:///{tmp_path}/o.db").trials
    assert studies.stored_result(first).reason == studies.RESULT_ATTR
    assert studies.stored_repeats(first)[0].reason == studies.RESULT_ATTR
    assert studies.stored_result(second).reason == f"{studies.REPEAT_ATTR}0"
    assert list(studies.stored_repeats(second)) == [0]
