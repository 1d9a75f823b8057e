"""The MLflow store as the sweep's driver and as a reader (`sweeper report`) see it."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import optuna
import pytest
from conftest import write_space
from optuna.trial import TrialState

from sweeper import study as studies
from sweeper.config import TrialConfig
from sweeper.report import hypervolume_rows
from sweeper.result import MeterInfo, RoundRecord, TrialResult
from sweeper.space import SearchSpace, load_space
from sweeper.study import storage_url
from sweeper.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    NOTE_TAG,
    ROLE_TAG,
    SEARCHED_TAG,
    TRIAL_METRICS,
    TRIAL_TAG,
    Tracker,
    trial_config_of_run,
    ui_url,
)


def test_readers_never_delete_a_child_run_still_being_logged(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "mlruns")
    parent = tracker.sweep_run("s", create=True)
    experiment = tracker.client.get_run(parent).info.experiment_id
    tags = {"mlflow.parentRunId": parent, ROLE_TAG: "trial"}
    finished = tracker.client.create_run(experiment, tags={**tags, TRIAL_TAG: "0"})
    tracker.client.set_terminated(finished.info.run_id)
    in_flight = tracker.client.create_run(experiment, tags={**tags, TRIAL_TAG: "1"})

    assert tracker.logged_trials(parent) == {0: finished.info.run_id}
    assert tracker.client.get_run(in_flight.info.run_id).info.lifecycle_stage == "active"
    # the driver, resuming after a crash, knows nobody else logs: the torso goes
    assert tracker.logged_trials(parent, clean_up=True) == {0: finished.info.run_id}
    assert tracker.client.get_run(in_flight.info.run_id).info.lifecycle_stage == "deleted"


def _logged_trial(tmp_path: Path) -> tuple[Tracker, SearchSpace, TrialConfig, str]:
    """One trial logged by hand (no Ray, no Flower): a 4.5 s Ray task whose two rounds
    took 1.5 s and 2 s, in a space with a conditional leverage not in force."""
    space = load_space(write_space(tmp_path / "s.yaml", description="codecs on 2 clients",
                                   leverages={
        "precision": {"choices": ["fp32", "bf16"]},
        "update_codec": {"choices": ["none", "int8"]},
        "local_epochs": {"low": 1, "high": 2},
        "lr": {"low": 0.01, "high": 0.1, "log": True},
        "features": {"choices": ["mfcc", "logmel"]},
        "n_mels": {"low": 20, "high": 64, "when": {"features": "logmel"}},
        "batch_size": {"value": 16}}))
    config = space.trial_config({"precision": "bf16", "update_codec": "int8",
                                 "local_epochs": 2, "lr": 0.0123456, "features": "mfcc",
                                 "batch_size": 16})
    start = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    meters = {c: MeterInfo(f"x host 'laptop' ({c})", "modeled")
              for c in ("client_compute_j", "communication_j")}
    rounds = [RoundRecord(r, 0.5 + r / 10, 1.0 / r, 1000 * r, 2000, wall, 10.0 * r,
                          {"client_compute_j": 8.0 * r, "communication_j": 2.0 * r}, 0.4, 64)
              for r, wall in ((1, 1.5), (2, 2.0))]
    result = TrialResult(rounds=rounds, accuracy=0.7, energy_j=20.0, wall_s=3.5,
                         bytes_total=8000, co2_g=0.01, meters=meters, info={
        "placement": {"start_utc": start.isoformat(),
                      "end_utc": (start + dt.timedelta(seconds=4.5)).isoformat()},
        "federation_started_unix": start.timestamp() + 0.75})
    tracker = Tracker(tmp_path / "store")
    parent = tracker.sweep_run("described", create=True, space=space)
    return tracker, space, config, tracker.log_trial(parent, 3, config, result)


def test_child_runs_read_like_an_experiment_log(tmp_path: Path) -> None:
    tracker, space, config, run_id = _logged_trial(tmp_path)
    experiment = tracker.client.get_experiment_by_name("described")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert experiment.tags[NOTE_TAG].startswith("codecs on 2 clients")
    run = tracker.client.get_run(run_id)

    assert run.info.run_name == "trial-3 precision=bf16 int8 local_epochs=2 lr=0.0123 mfcc"
    searched = "precision,update_codec,local_epochs,lr,features,n_mels"  # not batch_size
    assert run.data.tags[SEARCHED_TAG] == searched == ",".join(space.searched())
    # the Ray task's real window, not the few ms of logging
    assert run.info.end_time - run.info.start_time == 4500
    start_ms = run.info.start_time
    stamps = [m.timestamp - start_ms for m in sorted(
        tracker.client.get_metric_history(run_id, "round/accuracy"), key=lambda m: m.step)]
    assert stamps == [750 + 1500, 750 + 3500]  # federation start + the rounds' wall times

    params = run.data.params
    assert "None" not in params.values(), params
    assert "n_mels" not in params  # its `when: features: logmel` does not hold
    assert {"proximal_mu", "server_momentum", "topk_ratio", "summary", "scenario.data_dir",
            "scenario.dirichlet_alpha", "scenario.deploy_tls"}.isdisjoint(params)
    assert params["quant_granularity"] == "tensor" and params["n_mfcc"] == "10"  # in force
    # what is left out of the params is still in trial_config.json
    assert trial_config_of_run(run_id, tracker.uri) == config

    patterns = [re.escape(name).replace(re.escape("<kind>.<component>_j"), r"\w+\.\w+_j")
                for name in TRIAL_METRICS]
    for name in run.data.metrics:  # every metric has its unit in the legend
        assert any(re.fullmatch(p, name) for p in patterns), name
    assert {"round/bytes_up", "cumulative/energy_j",
            "cumulative/energy_modeled.client_compute_j"} <= set(run.data.metrics)


def test_ui_urls_open_the_model_training_view() -> None:
    assert ui_url("http://127.0.0.1:5000/", "7", "abc") == (
        "http://127.0.0.1:5000/#/experiments/7/runs/abc?workflowType=machine_learning")


def test_the_sweep_run_follows_the_study(grid_sweep) -> None:
    store, space = grid_sweep
    study = optuna.load_study(study_name="grid", storage=storage_url(store))
    tracker = Tracker(store)
    parent = tracker.sweep_run("grid", create=False)
    metrics = tracker.client.get_run(parent).data.metrics
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert metrics["sweep/trials_complete"] == len(complete) == 4
    assert metrics["sweep/trials_done"] == 4
    assert metrics["sweep/trials_failed"] == metrics["sweep/trials_pruned"] == 0
    assert metrics["sweep/front_size"] == len(studies.pareto_trials(study)) >= 1
    assert metrics["sweep/hypervolume"] == pytest.approx(
        hypervolume_rows(study, space)[-1]["hypervolume"])
    steps = [m.step for m in tracker.client.get_metric_history(parent, "sweep/trials_done")]
    assert steps == sorted(steps) and steps[-1] == 4  # updated as trials finished

    for number, run_id in tracker.logged_trials(parent).items():
        run = tracker.client.get_run(run_id)
        assert run.info.run_name.startswith(f"trial-{number} ")
        # the trial's own time, which includes its federation's wall time (a tiny trial's
        # federation took 0.09 s on a fast 2-core machine: any time, but some)
        assert (run.info.end_time - run.info.start_time
                >= 1000 * run.data.metrics["final.wall_s"] > 0)


def test_pareto_html_loads_the_stores_one_plotly(grid_sweep) -> None:
    store, _ = grid_sweep
    tracker = Tracker(store)
    parent = tracker.sweep_run("grid", create=False)
    page = tracker.artifact_folder(parent) / "pareto.html"
    assert page.stat().st_size < 100_000
    scripts = [p for p in store.rglob("plotly*") if p.is_file()]
    assert len(scripts) == 1 and scripts[0].stat().st_size > 1_000_000, scripts
    text = page.read_text()
    relative = re.search(r'\["([^"]+\.mjs)"\]', text).group(1)  # opened from the folder
    assert (page.parent / relative).resolve() == scripts[0].resolve()
    assert "/get-artifact?path=" + scripts[0].name in text  # inside the MLflow UI
    assert "energy_j (J, modeled: " in text or "energy_j (J, measured: " in text
