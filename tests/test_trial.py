"""One trial, through the real Flower runtime: records, bytes, energy, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SCENARIO, write_space
from mlflow.tracking import MlflowClient

from sweeper.cli import main
from sweeper.config import TrialConfig
from sweeper.space import load_space
from sweeper.tracking import tracking_uri, trial_config_of_run
from sweeper.trial import run_trial


def test_trial_records_every_round_and_int8_sends_fewer_bytes(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path / "s.yaml"))
    results = {}
    for codec in ("none", "int8"):
        config = space.trial_config(space.with_overrides({"update_codec": codec}))
        results[codec] = result = run_trial(config)
        assert result.status == "ok", result.reason
        assert [r.round for r in result.rounds] == [1, 2]
        energies = [r.energy_j for r in result.rounds]
        assert energies == sorted(energies) and energies[-1] == pytest.approx(result.energy_j)
        for record in result.rounds:
            assert sum(record.energy.values()) == pytest.approx(record.energy_j)
            assert 0.0 <= record.accuracy <= 1.0 and record.bytes_up > 0
        assert {m.kind for m in result.meters.values()} == {"modeled"}
        assert result.bytes_total == sum(r.bytes_up + r.bytes_down for r in result.rounds)
    up = {codec: sum(r.bytes_up for r in res.rounds) for codec, res in results.items()}
    assert up["int8"] < 0.3 * up["none"]
    down = {codec: sum(r.bytes_down for r in res.rounds) for codec, res in results.items()}
    assert abs(down["int8"] - down["none"]) < 100  # the downlink is fp32 in both


def test_same_config_same_result_to_the_last_bit(tmp_path: Path) -> None:
    """Replies reach the strategy in partition order, whatever order the engine delivers
    them in (float sums depend on it): every round's loss and accuracy repeat exactly."""
    scenario = {**TINY_SCENARIO, "num_clients": 6, "partition": "iid"}
    space = load_space(write_space(tmp_path / "s.yaml", scenario=scenario))
    config = space.trial_config(space.default_values())
    curves = [[(r.loss, r.accuracy, r.client_accuracy) for r in run_trial(config).rounds]
              for _ in range(3)]
    assert curves[0] == curves[1] == curves[2]


def test_a_crashing_trial_is_a_failed_result(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path / "s.yaml"))
    config = space.trial_config(space.default_values())
    broken = TrialConfig.from_dict({**config.to_dict(),
                                    "scenario": {**config.to_dict()["scenario"],
                                                 "num_clients": 50}})
    result = run_trial(broken)
    assert result.status == "failed"
    assert "training speakers cannot feed 50 clients" in result.reason


def test_trial_command_prints_json_and_logs_to_mlflow(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path / "s.yaml")
    store = tmp_path / "store"
    code = main(["trial", "--space", str(space), "--set", "update_codec=int8",
                 "--set", "precision=bf16", "--json", "--store", str(store)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["config"]["leverages"]["update_codec"] == "int8"
    assert out["config"]["leverages"]["precision"] == "bf16"
    assert out["result"]["status"] == "ok" and len(out["result"]["rounds"]) == 2
    run = MlflowClient(tracking_uri(store)).get_run(out["mlflow_run_id"])
    assert run.data.params["update_codec"] == "int8"
    rebuilt = trial_config_of_run(out["mlflow_run_id"], tracking_uri(store))
    assert rebuilt.to_dict() == out["config"]
