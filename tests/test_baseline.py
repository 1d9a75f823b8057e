"""The centralized baseline on a trial's energy ledger (meters, profiles, provenance), its
MLflow run, and federated points read against it (`baseline_compare`)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY_SCENARIO, write_space
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from sweeper.baseline import run_baseline
from sweeper.baseline_compare import BaselineCurve, energy_ratio, load_baseline
from sweeper.cli import main
from sweeper.config import TrialConfig
from sweeper.energy import load_profiles
from sweeper.kws.task import flops_per_example_of
from sweeper.space import load_space
from sweeper.tracking import ROLE_TAG, Tracker, tracking_uri
from sweeper.trial import prepare

MODELED = {**TINY_SCENARIO, "meters": "modeled"}  # the same components on every machine


def _configured(path: Path, scenario: dict, **overrides: str) -> TrialConfig:
    space = load_space(write_space(path, scenario=scenario))
    config = space.trial_config(space.with_overrides(overrides))
    prepare(config.scenario, config.seed)
    return config


def test_baseline_energy_is_a_trials_compute_without_communication(tmp_path: Path) -> None:
    result = run_baseline(_configured(tmp_path / "s.yaml", MODELED), 2)
    assert set(result.meters) == {"client_compute_j", "server_compute_j"}
    host = load_profiles().hosts["laptop"]
    for epoch in result.epochs:  # CPU seconds x the trial's host profile, cumulative
        assert set(epoch.energy) == set(result.meters)
        assert epoch.energy_j == pytest.approx(sum(epoch.energy.values()))
    client = [e.energy["client_compute_j"] for e in result.epochs]
    server = [e.energy["server_compute_j"] for e in result.epochs]
    assert client[-1] == pytest.approx(
        sum(e.train_cpu_s for e in result.epochs) * host.watts_per_core)
    assert server[-1] == pytest.approx(
        sum(e.eval_cpu_s for e in result.epochs) * host.watts_per_core)
    assert client == sorted(client) and server == sorted(server) and server[0] > 0
    assert {m.kind for m in result.meters.values()} == {"modeled"}
    assert result.meters["client_compute_j"].meter.startswith("process_cpu_time x host")
    assert result.energy_j == result.epochs[-1].energy_j
    assert result.info["meter_selection"]["why"] == "meters: modeled"


def test_device_profile_counts_training_flops_like_the_client(tmp_path: Path) -> None:
    config = _configured(tmp_path / "s.yaml", {**MODELED, "device_profile": "raspberry_pi_4"})
    result = run_baseline(config, 2)
    j_per_flop = load_profiles().devices["raspberry_pi_4"].j_per_flop["fp32"]
    assert result.epochs[-1].energy["client_compute_j"] == pytest.approx(
        flops_per_example_of(config)[0] * result.examples * 2 * j_per_flop)
    assert "device 'raspberry_pi_4'" in result.meters["client_compute_j"].meter


@pytest.fixture
def ticking_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A one-zone powercap tree whose counter a thread advances at 1 W."""
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("0\n")
    monkeypatch.setenv("SWEEPER_POWERCAP_ROOT", str(tmp_path / "powercap"))
    stop = threading.Event()

    def tick() -> None:
        start = time.perf_counter()
        while not stop.wait(0.005):
            fresh = zone / "energy_uj.new"  # replaced whole, as sysfs reads never tear
            fresh.write_text(f"{int((time.perf_counter() - start) * 1e6)}\n")
            fresh.replace(zone / "energy_uj")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    yield
    stop.set()
    ticker.join()


@pytest.mark.parametrize("isolation", ["node", "shared"])
def test_counters_are_read_as_a_trial_reads_them(ticking_counter, tmp_path: Path,
                                                 isolation: str) -> None:
    result = run_baseline(_configured(tmp_path / "s.yaml", {
        **TINY_SCENARIO, "meters": "rapl", "isolation": isolation, "idle_probe_s": 0.2}), 2)
    kinds = {component: info.kind for component, info in result.meters.items()}
    epochs_s = sum(e.wall_s for e in result.epochs)
    if isolation == "node":  # the node meter around each epoch: training and evaluation
        assert kinds == {"node_compute_j": "measured", "idle_j": "measured"}
        assert result.energy_j == pytest.approx(epochs_s, rel=0.3, abs=0.03)  # 1 W
        assert result.info["meter_selection"]["node_meter"].startswith("rapl-powercap")
    else:  # windows around the training only; the evaluation stays modeled, as a server's
        assert kinds == {"client_compute_j": "measured", "server_compute_j": "modeled"}
        assert 0 < result.epochs[-1].energy["client_compute_j"] <= epochs_s + 0.03
        assert "windowed around each client" in result.meters["client_compute_j"].meter


# Without the warm-up this fails: the first pass of a fresh process at each of the epoch's
# shapes (training batches, the last partial batch, the test evaluation) pays torch's lazy
# set-up (oneDNN kernels, allocator growth), and CPU time is what the modeled meter bills.
# Measured here (cnn_small, fp32): epoch 1 cost 20-28% more than epochs 2 and 3 without the
# warm-up, within 3% with it. The FLOP count and model summary taken before the first epoch
# already warm part of torch, so the gap is smaller than a bare first step's (about 25x);
# it is smaller still for slower models (ds_cnn_s: about 10%), hence the default model.
# Only a fresh process shows it: in pytest's, earlier tests have already warmed torch.
COLD_RUN = """
import json, sys, time
import torch
from sweeper.baseline import run_baseline
from sweeper.space import load_space
step, cold = torch.optim.SGD.step, [1.0]
def step_after_a_cold_start(self, *args, **kwargs):
    end, cold[:] = time.process_time() + sum(cold), []  # once per process, as torch's own
    while time.process_time() < end:
        pass
    return step(self, *args, **kwargs)
torch.optim.SGD.step = step_after_a_cold_start
space = load_space(sys.argv[1])
result = run_baseline(space.trial_config(space.with_overrides({})), 3)
print(json.dumps({"warmup_cpu_s": result.info["warmup_cpu_s"],
                  "epoch_cpu_s": [e.train_cpu_s + e.eval_cpu_s for e in result.epochs]}))
"""
COLD_START_CPU_S = 1.0


def test_first_epoch_pays_no_cold_start(tmp_path: Path) -> None:
    """torch's own first-use set-up costs ~0.03 CPU-s in a fresh process, as much as the
    machine's noise on a 0.1 CPU-s epoch: the process is given a cold start of 1 CPU-s in
    its first optimizer step, and the warm-up must keep it out of the first epoch."""
    _configured(tmp_path / "s.yaml", MODELED)  # the corpus and features, cached once
    done = subprocess.run([sys.executable, "-c", COLD_RUN, str(tmp_path / "s.yaml")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1],
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["warmup_cpu_s"] >= COLD_START_CPU_S, run
    first, *later = run["epoch_cpu_s"]
    assert first - max(later) <= COLD_START_CPU_S / 2, run


def test_baseline_command_logs_energy_like_a_trial(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "store"
    assert main(["baseline", "--space", str(write_space(tmp_path / "s.yaml", scenario=MODELED)),
                 "--epochs", "2", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "J (modeled; compute only" in out
    assert "client_compute_j" in out and "process_cpu_time x host 'laptop'" in out
    client = MlflowClient(tracking_uri(store))
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-baselines").experiment_id])
    metrics, tags = run.data.metrics, run.data.tags
    assert tags[ROLE_TAG] == "baseline" and run.data.params["scenario.meters"] == "modeled"
    history = {name: [m.value for m in sorted(client.get_metric_history(run.info.run_id, name),
                                              key=lambda m: m.step)]
               for name in ("accuracy", "loss", "energy_j", "epoch_wall_s",
                            "energy_modeled.client_compute_j",
                            "energy_modeled.server_compute_j")}
    assert all(len(values) == 2 for values in history.values())
    assert [m.step for m in client.get_metric_history(run.info.run_id, "energy_j")] == [1, 2]
    for step in range(2):
        assert history["energy_j"][step] == pytest.approx(
            history["energy_modeled.client_compute_j"][step]
            + history["energy_modeled.server_compute_j"][step])
    assert metrics["final.energy_j"] == history["energy_j"][-1]
    assert metrics["final.accuracy"] == history["accuracy"][-1]
    assert metrics["final.wall_s"] > 0
    assert not [k for k in [*metrics, *tags] if "communication" in k]
    assert tags["sweeper.meter_kind.client_compute_j"] == "modeled"
    assert tags["sweeper.meter.server_compute_j"].startswith("process_cpu_time x host")
    assert tags["sweeper.node_meter_note"] == "meters: modeled"


def test_energy_ratio_by_hand() -> None:
    curve = BaselineCurve("r", (0.2, 0.5, 0.4, 0.7), (1.0, 2.0, 3.0, 4.0), "modeled")
    assert energy_ratio(curve, 0.45, 10.0) == 5.0  # epoch 2 reaches 0.45 first
    assert energy_ratio(curve, 0.6, 10.0) == 2.5
    assert energy_ratio(curve, 0.0, 10.0) == 10.0
    for accuracy, energy in ((0.8, 10.0), (float("nan"), 10.0), (0.5, 0.0),
                             (0.5, float("inf")), (0.5, float("nan"))):
        assert math.isnan(energy_ratio(curve, accuracy, energy))
    assert math.isnan(energy_ratio(BaselineCurve("r", (0.9,), (0.0,), "modeled"), 0.5, 1.0))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real baselines in one store: scenario `a` twice (4 then 2 epochs), then `b` (another
    host profile), then a newer unfinished run and a newer run without energy for `a`."""
    folder = tmp_path_factory.mktemp("baselines")
    tracker = Tracker(folder / "store")
    a = _configured(folder / "a.yaml", MODELED)
    b = _configured(folder / "b.yaml", {**MODELED, "host_profile": "g5k_gros"})
    runs = {"old_a": tracker.log_baseline("tiny-baselines", a, run_baseline(a, 2))}
    time.sleep(0.01)  # runs are ordered by their start time (ms)
    runs["a"] = tracker.log_baseline("tiny-baselines", a, run_baseline(a, 4))
    time.sleep(0.01)
    runs["b"] = tracker.log_baseline("tiny-baselines", b, run_baseline(b, 2))
    time.sleep(0.01)
    experiment = tracker.client.get_experiment_by_name("tiny-baselines").experiment_id
    params = [Param(f"scenario.{k}", str(v)) for k, v in a.to_dict()["scenario"].items()]
    unfinished = tracker.client.create_run(experiment, tags={ROLE_TAG: "baseline"})
    tracker.client.log_batch(unfinished.info.run_id, params=params,
                             metrics=[Metric("energy_j", 1.0, 0, 1)])
    no_energy = tracker.client.create_run(experiment, tags={ROLE_TAG: "baseline"})
    tracker.client.log_batch(no_energy.info.run_id, params=params,
                             metrics=[Metric("accuracy", 0.5, 0, 1)])
    tracker.client.set_terminated(no_energy.info.run_id)
    return {"uri": tracker.uri, "runs": runs, "a": a, "b": b}


def test_load_baseline_picks_the_newest_finished_run_of_the_scenario(logged: dict) -> None:
    uri, runs = logged["uri"], logged["runs"]
    curve_a = load_baseline(uri, "tiny", logged["a"].to_dict()["scenario"])
    curve_b = load_baseline(uri, "tiny", logged["b"].to_dict()["scenario"])
    assert curve_a is not None and curve_a.run_id == runs["a"]
    assert curve_b is not None and curve_b.run_id == runs["b"]
    assert len(curve_a.accuracy_by_epoch) == len(curve_a.energy_j_by_epoch) == 4
    assert curve_a.kind == curve_b.kind == "modeled"
    other = {**logged["a"].to_dict()["scenario"], "num_clients": 3}
    assert load_baseline(uri, "tiny", other) is None
    # a space of the same scenario finds the baseline another space logged
    found = load_baseline(uri, "other-space", logged["a"].to_dict()["scenario"])
    assert found is not None and found.run_id == runs["a"]


def test_energy_ratio_against_the_logged_histories(logged: dict) -> None:
    curve = load_baseline(logged["uri"], "tiny", logged["a"].to_dict()["scenario"])
    client = MlflowClient(logged["uri"])
    accuracy, energy = ([m.value for m in sorted(client.get_metric_history(curve.run_id, key),
                                                 key=lambda m: m.step)]
                        for key in ("accuracy", "energy_j"))
    federated_j = 123.0
    for target in set(accuracy):
        first = next(i for i, reached in enumerate(accuracy) if reached >= target)
        assert energy_ratio(curve, target, federated_j) == pytest.approx(
            federated_j / energy[first])
    assert math.isnan(energy_ratio(curve, max(accuracy) + 0.01, federated_j))


def test_the_report_reads_every_front_point_against_the_baseline(
        tmp_path: Path, ray_cluster: str) -> None:
    """The baseline is run with one space, the sweep with another of the same scenario (as
    quick.yaml's baseline serves repeats.yaml's sweep): the report finds it all the same."""
    baseline_space = write_space(tmp_path / "s.yaml", scenario=MODELED)
    space = write_space(tmp_path / "other.yaml", name="tiny-other", scenario=MODELED,
                        budget={"trials": 2, "parallel": 2})
    store = tmp_path / "store"
    assert main(["baseline", "--space", str(baseline_space), "--epochs", "5",
                 "--store", str(store)]) == 0
    assert main(["pareto", "--space", str(space), "--name", "vs", "--store", str(store),
                 "--ray-address", ray_cluster]) == 0
    client = MlflowClient(tracking_uri(store))
    baseline = client.search_runs(
        [client.get_experiment_by_name("tiny-baselines").experiment_id])[0].info.run_id
    accuracy, energy = ([m.value for m in sorted(client.get_metric_history(baseline, key),
                                                 key=lambda m: m.step)]
                        for key in ("accuracy", "energy_j"))
    parent = next(r for r in client.search_runs(
        [client.get_experiment_by_name("vs").experiment_id])
        if r.data.tags.get(ROLE_TAG) == "sweep").info.run_id
    with open(client.download_artifacts(parent, "pareto.csv", str(tmp_path))) as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        first = next((i for i, reached in enumerate(accuracy)
                      if reached >= float(row["accuracy"])), None)
        expected = math.nan if first is None else float(row["energy_j"]) / energy[first]
        assert float(row["energy_vs_baseline"]) == pytest.approx(expected, nan_ok=True)
    assert any(math.isfinite(float(row["energy_vs_baseline"])) for row in rows)
    html = Path(client.download_artifacts(parent, "pareto.html", str(tmp_path))).read_text()
    assert "centralized baseline" in html and baseline in html


def test_baseline_trains_as_a_one_client_federation(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline and the ClientApp read their training settings in one place
    (`TrainSettings.from_leverages`): a one-client, one-round federation's training is
    replayed bit for bit by the baseline's settings."""
    import copy

    from sweeper.baseline import baseline_settings
    from sweeper.engines import run_trial_federation
    from sweeper.kws import TrainSettings

    calls: list[tuple] = []
    real_fit = TrainSettings.fit

    def spy(self, model, x, y, *, seed):
        start = copy.deepcopy(model)
        loss = real_fit(self, model, x, y, seed=seed)
        calls.append((self, start, x, y, seed, loss))
        return loss

    monkeypatch.setattr(TrainSettings, "fit", spy)
    config = _configured(tmp_path / "s.yaml", {**MODELED, "num_clients": 1, "rounds": 1},
                         precision="bf16", optimizer="adam", lr="0.01", batch_size="8",
                         width="0.25")
    run_trial_federation(config)
    client, start, x, y, seed, loss = calls[-1]  # the round's training (warm-ups come first)
    run_baseline(config, 1)
    central = calls[-1][0]
    assert central == client  # local_epochs 1, no FedProx: nothing for the baseline to change
    assert central.precision == "bf16" and central.optimizer == "adam" and central.lr == 0.01
    pooled_x, pooled_y = calls[-1][2], calls[-1][3]  # the client's examples and its held-out
    assert pooled_x.shape[1:] == x.shape[1:] and len(pooled_y) > len(y)
    assert baseline_settings(config) == central
    assert central.fit(start, x, y, seed=seed) == loss
