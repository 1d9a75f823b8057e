"""Run-time faults on real Ray and real stores: signals to the driver, trials that raise,
run too long or out of memory, a Ray node lost mid-sweep. Every one is followed by the
stores-agree check."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import TINY_SCENARIO, assert_stores_agree, wait_for_study, write_space
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeper.cli import main
from sweeper.config import Scenario
from sweeper.energy import load_profiles
from sweeper.orchestrate import _spent_j
from sweeper.study import DUPLICATE_ATTR, INTERRUPTED_ATTR, INTERRUPTIONS_ATTR, stored_repeats
from sweeper.tracking import Tracker, tracking_uri

RESUME_LINE = "resume: sweeper pareto --space"


def _driver(space: Path, store: Path, address: str, sweep: str, log: Path,
            resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sweeper.cli", "pareto", "--space", str(space), "--store",
           str(store), "--ray-address", address, "--resume" if resume else "--name", sweep]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _until(holds: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while not holds():
        if time.time() > deadline:
            pytest.fail(f"never: {what}")
        time.sleep(0.05)


def _running(count: int) -> Callable[[optuna.Study], bool | str]:
    """`count` configurations running (taken over ones included), none finished."""
    def ready(study: optuna.Study) -> bool | str:
        trials = study.trials  # read once: the driver may add a trial between two reads
        if any(t.state == TrialState.COMPLETE for t in trials):
            return "a trial finished before the signal: rounds too short"
        return sum(t.state == TrialState.RUNNING and not t.user_attrs.get(INTERRUPTED_ATTR)
                   for t in trials) >= count
    return ready


def _stopped_cleanly(driver: subprocess.Popen, log: Path, code: int) -> str:
    """The driver's exit: `code`, no traceback, one line saying how to resume."""
    assert driver.wait(timeout=120) == code, log.read_text()[-3000:]
    out = log.read_text()
    assert "Traceback" not in out, out[-3000:]
    assert out.count(RESUME_LINE) == 1, out[-3000:]
    return out


def _listed(store: Path, capsys: pytest.CaptureFixture) -> dict[str, str]:
    """`sweeper list`'s one row, by column."""
    capsys.readouterr()
    assert main(["list", "--store", str(store)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "│" in line or "┃" in line]
    head, row = ([c.strip() for c in line.strip("┃│ ").replace("┃", "│").split("│")]
                 for line in (lines[0], lines[-1]))
    return dict(zip(head, row, strict=True))


@pytest.mark.fault("SIGINT once, then --resume",
                   "running trials finish and are logged; one line says how to resume; the "
                   "resumed sampler proposes only new configurations")
def test_ctrl_c_once_lets_trials_finish_and_resume_proposes_new_ones(
        tmp_path: Path, ray_cluster: str) -> None:
    space = write_space(tmp_path / "tiny.yaml", budget={"trials": 3, "parallel": 2},
                        scenario={**TINY_SCENARIO, "rounds": 3})
    store, log = tmp_path / "store", tmp_path / "driver.log"
    driver = _driver(space, store, ray_cluster, "once", log)
    wait_for_study(store, "once", _running(2), log)
    driver.send_signal(signal.SIGINT)
    _stopped_cleanly(driver, log, 128 + signal.SIGINT)

    before = assert_stores_agree(store, "once")
    assert {t.state for t in before.trials} == {TrialState.COMPLETE}  # finished, not cut off
    assert len(before.trials) == 2

    assert main(["pareto", "--space", str(space), "--store", str(store),
                 "--resume", "once"]) == 0
    study = assert_stores_agree(store, "once")  # no configuration ran twice
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert not any(DUPLICATE_ATTR in t.user_attrs for t in study.trials)  # none re-proposed


@pytest.mark.fault("SIGINT twice, then SIGTERM to the resumed driver",
                   "stops at once without a traceback; the cut-off trials are marked "
                   "interrupted (own column in `sweeper list`) and taken over by --resume")
def test_ctrl_c_twice_and_sigterm_stop_now_and_mark_trials_interrupted(
        tmp_path: Path, ray_cluster: str, capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path / "tiny.yaml", budget={"trials": 2, "parallel": 2},
                        scenario={**TINY_SCENARIO, "rounds": 400})
    store, log = tmp_path / "store", tmp_path / "driver.log"
    driver = _driver(space, store, ray_cluster, "twice", log)
    wait_for_study(store, "twice", _running(2), log)
    driver.send_signal(signal.SIGINT)
    _until(lambda: RESUME_LINE in log.read_text(), "the first SIGINT said how to resume")
    driver.send_signal(signal.SIGINT)
    _stopped_cleanly(driver, log, 128 + signal.SIGINT)

    study = assert_stores_agree(store, "twice")
    assert [(t.state, t.user_attrs[INTERRUPTED_ATTR]) for t in study.trials] == [
        (TrialState.RUNNING, True)] * 2
    row = _listed(store, capsys)
    assert (row["interrupted"], row["failed"], row["running"]) == ("2", "0", "0")
    tracker = Tracker(store)
    assert tracker.client.get_run(tracker.sweep_run("twice", create=False)).info.status == (
        "KILLED")

    params = [t.params for t in study.trials]
    driver = _driver(space, store, ray_cluster, "twice", log, resume=True)
    wait_for_study(store, "twice", _running(2), log)  # both taken over
    driver.send_signal(signal.SIGTERM)
    _stopped_cleanly(driver, log, 128 + signal.SIGTERM)
    study = assert_stores_agree(store, "twice")
    assert [t.params for t in study.trials] == params  # under their own numbers
    assert [(t.user_attrs[INTERRUPTED_ATTR], t.user_attrs[INTERRUPTIONS_ATTR])
            for t in study.trials] == [(True, 2)] * 2


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory: pytest.TempPathFactory,
                  ray_cluster: str) -> tuple[Path, dict[str, optuna.trial.FrozenTrial]]:
    """One grid sweep of four trials: one fine, one refused by the node (a speed setting it
    cannot apply: the trial raises), one too long for `budget.trial_timeout_s`, one too big
    for `budget.memory_per_trial_mb`. Its store, and its trials by kind."""
    tmp = tmp_path_factory.mktemp("failing")
    space = write_space(
        tmp / "failing.yaml", budget={"trials": 4, "parallel": 2, "trial_timeout_s": 15,
                                      "memory_per_trial_mb": 800},
        sampler={"name": "grid", "seed": 0}, scenario={**TINY_SCENARIO, "rounds": 1},
        leverages={"model": {"choices": ["cnn_small", "ds_cnn_s", "ds_cnn_l"]},
                   "rounds": {"low": 1, "high": 10_000, "step": 9_999,
                              "when": {"model": "cnn_small"}},
                   "gpu_power_limit_w": {"value": 100.0, "when": {"model": "ds_cnn_s"}},
                   "width": {"value": 4.0, "when": {"model": "ds_cnn_l"}},
                   "n_mfcc": {"value": 40, "when": {"model": "ds_cnn_l"}},
                   "batch_size": {"value": 4096, "when": {"model": "ds_cnn_l"}}})
    store = tmp / "store"
    assert main(["pareto", "--space", str(space), "--store", str(store), "--name", "f"]) == 0
    study = assert_stores_agree(store, "f")
    kinds = {"ok": ("cnn_small", 1), "raises": ("ds_cnn_s", None),
             "timeout": ("cnn_small", 10_000), "oom": ("ds_cnn_l", None)}
    by_params = {(t.params["model"], t.params.get("rounds")): t for t in study.trials}
    assert len(by_params) == len(study.trials) == 4
    return store, {kind: by_params[params] for kind, params in kinds.items()}


def _failed_with(failing_sweep: tuple[Path, dict], kind: str, *phrases: str) -> None:
    """The trial of `kind` failed in Optuna and in its MLflow run, with a reason saying
    `phrases`; the fine trial of the same sweep completed."""
    store, trials = failing_sweep
    assert trials["ok"].state == TrialState.COMPLETE
    trial = trials[kind]
    assert trial.state == TrialState.FAIL
    for phrase in phrases:
        assert phrase in trial.user_attrs["reason"], trial.user_attrs["reason"]
    runs = MlflowClient(tracking_uri(store)).search_runs(
        [MlflowClient(tracking_uri(store)).get_experiment_by_name("f").experiment_id],
        f"tags.`sweeper.trial` = '{trial.number}'")
    assert [(r.info.status, r.data.tags["sweeper.status"]) for r in runs] == [
        ("FAILED", "failed")]


@pytest.mark.fault("a trial raises (a speed setting the node refuses)",
                   "failed with the reason; the sweep goes on")
def test_a_trial_that_raises_is_failed_and_the_sweep_goes_on(failing_sweep) -> None:
    _failed_with(failing_sweep, "raises", "gpu_power_limit_w=100")


@pytest.mark.fault("a trial runs past budget.trial_timeout_s",
                   "killed (its Ray worker too), failed with the reason; the sweep goes on")
def test_a_trial_past_its_timeout_is_killed_and_failed(failing_sweep) -> None:
    _failed_with(failing_sweep, "timeout", "timeout", "still running 15 s after it started")


def test_every_failed_trial_is_charged_to_the_energy_budget(failing_sweep) -> None:
    """What failed trials used counts in `budget.energy_j`, never 0 J or NaN: one that
    raised or ran out of memory, its process's CPU time; one killed at its timeout, which
    could not report, an upper bound from the time it ran (15 s at least)."""
    store, trials = failing_sweep
    watts = load_profiles().hosts[Scenario().host_profile].watts_per_core  # the tiny one's
    spent = {}
    for kind in ("raises", "timeout", "oom"):
        (result,) = stored_repeats(trials[kind]).values()
        spent[kind] = result.info["spent_j"]
        assert 0 < spent[kind] < math.inf and result.meters["spent_j"].kind == "modeled"
    assert spent["timeout"] >= 15 * watts  # one reserved CPU for the 15 s of its limit
    assert "upper bound" in stored_repeats(trials["timeout"])[0].meters["spent_j"].meter
    study = optuna.load_study(study_name="f", storage=f"sqlite:///{store}/optuna.db")
    ok = stored_repeats(trials["ok"])[0].energy_j
    assert _spent_j(study, []) == pytest.approx(ok + sum(spent.values()))


@pytest.mark.fault("a trial needs more than budget.memory_per_trial_mb",
                   "its allocation fails (RLIMIT_AS), failed as out of memory; the sweep "
                   "goes on")
def test_a_trial_out_of_memory_is_failed_and_the_sweep_goes_on(failing_sweep) -> None:
    _failed_with(failing_sweep, "oom", "out of memory", "memory_per_trial_mb = 800 MB")


def _runs_a_trial(node) -> bool:
    """A worker of this `ray.cluster_utils` node (a child of its raylet) runs a trial."""
    raylet = node.all_processes["raylet"][0].process.pid
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == raylet and (proc / "cmdline").read_bytes().startswith(
                    b"ray::trial-"):
                return True
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return False


@pytest.mark.slow  # ~45 s; the retry's record is also shown by the killed-worker fault
@pytest.mark.fault("a Ray node removed mid-sweep (ray.cluster_utils)",
                   "Ray re-runs its trial elsewhere; the retry is recorded (tag, `sweeper "
                   "list` column, live line); the sweep finishes")
def test_a_lost_ray_node_is_retried_and_recorded(tmp_path: Path, sweeper_cache: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from ray.cluster_utils import Cluster

    # two one-CPU nodes: the head (which must stay) and the one removed; one trial each
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes = [cluster.head_node, cluster.add_node(num_cpus=1)]
        cluster.wait_for_nodes()
        space = write_space(tmp_path / "tiny.yaml", budget={"trials": 2, "parallel": 2},
                            scenario={**TINY_SCENARIO, "rounds": 4})
        store, log = tmp_path / "store", tmp_path / "driver.log"
        driver = _driver(space, store, cluster.address, "lost", log)
        _until(lambda: _runs_a_trial(nodes[1]), "a trial running on the second node")
        cluster.remove_node(nodes[1])
        assert driver.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        cluster.shutdown()
    assert "Traceback" not in log.read_text()
    study = assert_stores_agree(store, "lost")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    retried = [t for t in study.trials if t.user_attrs.get("ray_retries")]
    assert len(retried) == 1, [t.user_attrs for t in study.trials]
    assert _listed(store, capsys)["retried"] == "1"
    client = MlflowClient(tracking_uri(store))
    runs = client.search_runs([client.get_experiment_by_name("lost").experiment_id],
                              "tags.`sweeper.ray_retries` = '1'")
    assert [r.data.tags["sweeper.trial"] for r in runs] == [str(retried[0].number)]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("trial_timeout_s", 0, "budget.trial_timeout_s: must be > 0"),
    ("trial_timeout_s", "soon", "budget.trial_timeout_s"),
    ("memory_per_trial_mb", 0, "budget.memory_per_trial_mb: must be >= 1"),
    ("memory_per_trial_mb", 1.5, "budget.memory_per_trial_mb")])
def test_per_trial_limits_are_validated(tmp_path: Path, key: str, value: object,
                                        message: str) -> None:
    from sweeper.errors import SweeperError
    from sweeper.space import load_space

    space = write_space(tmp_path / "s.yaml", budget={"trials": 2, key: value})
    with pytest.raises(SweeperError, match=message):
        load_space(space)
