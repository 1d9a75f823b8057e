"""The MLflow store as the sweep's driver and as a reader (`sweeper report`) see it."""

from __future__ import annotations

from pathlib import Path

from sweeper.tracking import ROLE_TAG, TRIAL_TAG, Tracker


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
