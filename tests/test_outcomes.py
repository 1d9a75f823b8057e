"""What Optuna is told, and what the budget counts, for every kind of outcome: a target
never reached, a node energy reading with no coverage, pruned and failed trials."""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import optuna
import pytest
from conftest import TINY_SCENARIO, write_space
from optuna.trial import TrialState

from sweeper import study as studies
from sweeper.cli import main
from sweeper.orchestrate import _spent_j, attribute_node_energy
from sweeper.result import MeterInfo, RoundRecord, TrialResult, energy_to_accuracy
from sweeper.space import load_space

OBJECTIVES = [{"metric": "accuracy", "direction": "maximize"},
              {"metric": "energy_to_accuracy_j", "direction": "minimize"}]


def _rounds(*points: tuple[float, float]) -> list[RoundRecord]:
    return [RoundRecord(i + 1, acc, 1.0, 10, 10, 1.0, joules, {"client_compute_j": joules})
            for i, (acc, joules) in enumerate(points)]


def _result(rounds: list[RoundRecord], target: float | None = None, **fields) -> TrialResult:
    result = TrialResult(rounds=rounds, accuracy=rounds[-1].accuracy,
                         energy_j=rounds[-1].energy_j, **fields)
    if target is not None:
        result.energy_to_accuracy_j = energy_to_accuracy(rounds, target)
    return result


def test_energy_to_accuracy_is_the_energy_of_the_first_round_reaching_it() -> None:
    rounds = _rounds((0.3, 5.0), (0.62, 9.0), (0.55, 14.0), (0.7, 20.0))
    assert energy_to_accuracy(rounds, 0.6) == 9.0
    assert energy_to_accuracy(rounds, 0.7) == 20.0
    assert math.isnan(energy_to_accuracy(rounds, 0.71))


def test_a_trial_short_of_the_target_is_infeasible_never_free(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path / "t.yaml", objectives=OBJECTIVES,
                                   target_accuracy=0.6))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db",
                                directions=["maximize", "minimize"])
    reached = _result(_rounds((0.4, 5.0), (0.65, 9.0)), 0.6)
    short = _result(_rounds((0.4, 2.0), (0.5, 3.0)), 0.6)
    for result in (reached, short):
        studies.tell(study, study.ask(), space, result)
    told = study.get_trials()
    assert [t.state for t in told] == [TrialState.COMPLETE] * 2
    assert told[0].values == [0.65, 9.0] and studies.is_feasible(told[0])
    assert told[1].values[1] == math.inf and not studies.is_feasible(told[1])
    assert [t.number for t in studies.pareto_trials(study)] == [0]


def test_a_missing_objective_fails_the_trial_with_the_reason(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path / "n.yaml", objectives=[
        {"metric": "accuracy", "direction": "maximize"},
        {"metric": "node_energy_j", "direction": "minimize"}]))
    result = _result(_rounds((0.5, 4.0)))
    result.info["placement"] = {"nodes": ["gros-42.nancy.grid5000.fr"],
                                "start_utc": "2026-12-03T10:00:00+00:00",
                                "end_utc": "2026-12-03T10:01:00+00:00"}

    def no_samples(nodes: list[str], start: dt.datetime, end: dt.datetime) -> dict:
        return {"joules": math.nan, "meter": "Kwollect wattmetre_power_watt",
                "reason": "gros-42: no wattmetre_power_watt sample in the window"}

    attribute_node_energy(result, no_samples)
    assert math.isnan(result.node_energy_j) and "node_energy_j" not in result.meters
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db",
                                directions=["maximize", "minimize"])
    studies.tell(study, study.ask(), space, result)
    trial = study.get_trials()[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["reason"] == ("objective node_energy_j is NaN: gros-42: no "
                                          "wattmetre_power_watt sample in the window")


def test_the_energy_budget_counts_pruned_and_failed_trials(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path / "b.yaml"))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db",
                                directions=["maximize", "minimize"])
    ok = _result(_rounds((0.5, 4.0), (0.6, 7.0)))
    pruned = _result(_rounds((0.2, 3.0)), status="pruned", reason="pruned: ...")
    failed = TrialResult.failed("boom")
    failed.info["spent_j"] = 2.5
    failed.meters["spent_j"] = MeterInfo("CPU time until it failed", "modeled")
    for result in (ok, pruned, failed):
        trial = study.ask()
        studies.store_repeat(trial, 0, result)
        studies.tell(study, trial, space, result)
    assert _spent_j(study, []) == pytest.approx(7.0 + 3.0 + 2.5)


def test_target_and_repeats_are_checked_at_load(tmp_path: Path) -> None:
    cases = {"target_accuracy: required by energy_to_accuracy_j":
             {"objectives": OBJECTIVES},
             "target_accuracy: a fraction in (0, 1]":
             {"objectives": OBJECTIVES, "target_accuracy": 1.5},
             "budget.repeats: must be >= 1": {"budget": {"trials": 2, "repeats": 0}}}
    for message, overrides in cases.items():
        path = write_space(tmp_path / "bad.yaml", **overrides)
        with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_space(path)
        assert main(["pareto", "--space", str(path), "--store", str(tmp_path / "s")]) == 2
        assert not (tmp_path / "s").exists()


def test_names_never_make_paths_outside_the_store(tmp_path: Path) -> None:
    from sweeper.names import file_safe
    from sweeper.runtime import runtime_dir

    assert file_safe("../../etc/passwd") == "_.._etc_passwd"
    assert "/" not in file_safe("a/b") and not file_safe(".hidden").startswith(".")
    space = write_space(tmp_path / "s.yaml", name="../evil")
    assert main(["pareto", "--space", str(space), "--store", str(tmp_path / "s")]) == 2
    good = write_space(tmp_path / "g.yaml")
    assert main(["pareto", "--space", str(good), "--store", str(tmp_path / "s"),
                 "--name", "x/../../y"]) == 2
    assert not (tmp_path / "s").exists()
    folder = runtime_dir()
    assert folder.stat().st_mode & 0o777 == 0o700 and folder.stat().st_uid == os.getuid()


def test_a_study_name_from_an_optuna_db_names_no_file_outside(tmp_path: Path) -> None:
    """An optuna.db from elsewhere whose study is named to climb out of the folders sweeper
    writes in: `report` and `list` write nothing outside the store and the temp folder."""
    import tempfile
    import uuid

    tag = f"sweeper-evil-{uuid.uuid4().hex[:8]}"
    name = f"../../{tag}"
    store = tmp_path / "store"
    store.mkdir()
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{store}/optuna.db",
                                directions=["maximize", "minimize"])
    study.set_user_attr(studies.SPACE_ATTR, write_space(tmp_path / "s.yaml").read_text())
    main(["report", name, "--store", str(store)])
    main(["list", "--store", str(store)])
    roots = {Path("/"), tmp_path.parent, Path(tempfile.gettempdir()), store.parent}
    escaped = [p for root in roots for p in root.glob(f"{tag}*")]
    for path in escaped:  # what a regression wrote, removed before failing
        path.unlink(missing_ok=True)
    assert escaped == []


def test_a_runtime_folder_others_can_enter_is_refused(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from sweeper.errors import SweeperError
    from sweeper.runtime import runtime_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "sweeper").mkdir(mode=0o777)
    (tmp_path / "sweeper").chmod(0o777)
    with pytest.raises(SweeperError, match="others may enter it"):
        runtime_dir()


def test_a_sweep_tells_optuna_the_energy_to_the_target(tmp_path: Path, ray_cluster: str) -> None:
    """`energy_to_accuracy_j` through a real sweep: each configuration's value is the
    cumulative joules of its first round reaching `target_accuracy` (feasible), or +inf and
    infeasible where no round does; never 0."""
    target = 0.01  # a model that predicts one class still gets 1 in 12 right
    space = write_space(tmp_path / "t.yaml", objectives=OBJECTIVES, target_accuracy=target,
                        budget={"trials": 2, "parallel": 2},
                        sampler={"name": "grid", "seed": 0},
                        scenario={**TINY_SCENARIO, "rounds": 3},
                        leverages={"precision": {"choices": ["fp32", "bf16"]},
                                   "local_epochs": {"value": 2}})
    store = tmp_path / "store"
    assert main(["pareto", "--space", str(space), "--store", str(store), "--name", "t",
                 "--ray-address", ray_cluster]) == 0
    study = optuna.load_study(study_name="t", storage=studies.storage_url(store))
    reached = 0
    for trial in study.trials:
        rounds = studies.stored_result(trial).rounds
        first = next((r for r in rounds if r.accuracy >= target), None)
        gap = trial.constraints[studies.TARGET_CONSTRAINT]
        if first is None:
            assert trial.values[1] == math.inf and gap > 0
        else:
            reached += 1
            assert trial.values[1] == pytest.approx(first.energy_j) and first.energy_j > 0
            assert gap == 0
    assert reached, "no configuration reached the target: nothing was checked"
