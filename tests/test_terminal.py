"""What a user reads in the terminal: help on every argument, errors that say where to look,
numbers to 4 significant digits, importances only of leverages that varied, tables that fit."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import optuna
import pytest
from conftest import write_space
from rich.console import Console

from sweeper.cli import _parser, main
from sweeper.live import fmt, split_header
from sweeper.report import front_table, importances, run_id_lines
from sweeper.space import load_space


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_argument_of_every_command_has_help() -> None:
    parser = _parser()
    commands = _subcommands(parser)
    assert {"pareto", "trial", "report", "list", "baseline", "cluster"} <= set(commands)
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, command in commands.items() for action in command._actions
               if not isinstance(action, argparse._HelpAction)
               and (not action.help or action.help == argparse.SUPPRESS)]
    assert not missing, f"arguments without help: {missing}"
    assert all(command.description for command in commands.values())


def test_help_has_a_user_facing_description_and_examples() -> None:
    parser = _parser()
    top = parser.format_help()
    assert "parse, call, print" not in top
    assert "examples:\n  sweeper pareto --space search_spaces/quick.yaml" in top
    pareto = _subcommands(parser)["pareto"].format_help()
    assert "examples:\n  sweeper pareto --space search_spaces/quick.yaml\n" in pareto


def test_an_unknown_sweep_points_to_sweeper_list(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "store"
    optuna.create_study(study_name="other", storage=f"sqlite:///{store.mkdir() or store}"
                                                    "/optuna.db")
    assert main(["report", "nosuch", "--store", str(store)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("sweeper: error: no sweep named 'nosuch' in ")
    assert error.endswith(f"`sweeper list --store {store}` lists the sweeps there")


@pytest.mark.parametrize(("value", "shown"), [
    (0.041234567891234567, "0.04123"), (56.54321, "56.54"), (0.5, "0.5"), (1234567.0, "1.235e+06"),
    (float("nan"), "nan"), (339577, "339577"), (3, "3"), (True, "True"), (None, ""),
    ("bf16", "bf16")])
def test_numbers_are_shown_to_4_significant_digits(value: object, shown: str) -> None:
    assert fmt(value) == shown


def test_front_table_fits_and_keeps_run_ids_whole() -> None:
    run_id = "4c84da1800524bb390dfdd17df9f1590"
    rows = [{"trial": 6, "feasible": True, "precision": "fp32", "update_codec": "none",
             "local_epochs": 3, "clients_per_round": 3, "lr": 0.08353901234567891,
             "accuracy": 0.5394, "energy_j": 68.1712, "wall_s": 11.33, "bytes_total": 4608152,
             "mlflow_run_id": run_id}]
    for width in (160, 100):
        out = io.StringIO()
        Console(file=out, width=width).print(front_table(rows, "Pareto front"))
        text = out.getvalue()
        assert "0.08354" in text and "…" not in text, text
        assert max(len(line) for line in text.splitlines()) <= width
    assert split_header("clients_per_round") == "clients_\nper_round"
    assert run_id_lines(rows) == [f"  trial 6: MLflow run {run_id}"]


def test_importances_leave_out_leverages_that_never_varied(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path / "s.yaml"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    distributions = {lev.name: lev.distribution() for lev in space.leverages}
    for i in range(8):
        params = {"precision": "bf16", "update_codec": ["none", "fp16", "int8"][i % 3],
                  "local_epochs": 1 + i % 2, "lr": 0.01 + 0.01 * i}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions,
            values=[0.1 * i + 0.05 * (i % 2), 10.0 + params["local_epochs"] * 5 + i]))
    ranked = importances(study, space)
    assert set(ranked) == {"accuracy", "energy_j"}
    for ranking in ranked.values():
        assert set(ranking) == {"update_codec", "local_epochs", "lr"}
