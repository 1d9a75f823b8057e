"""Search-space validation: every bad space is one line naming the key, exit 2, no store."""

from __future__ import annotations

from pathlib import Path

import optuna.distributions as od
import pytest
import yaml
from conftest import write_space

from sweeper.cli import main
from sweeper.space import load_space


def test_valid_space_gives_optuna_distributions(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path / "s.yaml"))
    dists = space.distributions()
    assert dists["precision"] == od.CategoricalDistribution(["fp32", "bf16"])
    assert dists["local_epochs"] == od.IntDistribution(1, 2)
    assert dists["lr"] == od.FloatDistribution(0.01, 0.1, log=True)
    assert [o.metric for o in space.objectives] == ["accuracy", "energy_j"]
    assert space.scenario.num_clients == 2 and space.trials == 4 and space.parallel == 2


def test_quick_space_is_valid() -> None:
    space = load_space(Path(__file__).parents[1] / "search_spaces" / "quick.yaml")
    names = {lev.name for lev in space.leverages}
    assert {"precision", "update_codec", "local_epochs", "clients_per_round", "lr"} <= names


def _mutate(raw: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()
BAD = [
    ("top-level unknown key", "colour", "red", "colour"),
    ("unknown scenario key", "scenario.num_client", 3, "scenario.num_client"),
    ("unknown leverage", "leverages.precison", {"choices": ["fp32"]}, "leverages.precison"),
    ("empty choices", "leverages.precision", {"choices": []}, "leverages.precision.choices"),
    ("choice not supported", "leverages.update_codec", {"choices": ["zip"]},
     "leverages.update_codec.choices"),
    ("low > high", "leverages.lr", {"low": 0.5, "high": 0.1}, "leverages.lr"),
    ("unknown objective", "objectives", [{"metric": "joules", "direction": "minimize"}],
     "objectives[0].metric"),
    ("wrong type", "budget.trials", "many", "budget.trials"),
    ("wrong scenario type", "scenario.rounds", 2.5, "scenario.rounds"),
    ("bad direction", "objectives", [{"metric": "accuracy", "direction": "up"}],
     "objectives[0].direction"),
    ("missing leverages", "leverages", DELETE, "leverages"),
    ("unknown profile", "scenario.network_profile", "carrier-pigeon",
     "scenario.network_profile"),
    ("emulated link without a shape (wifi)", "scenario.deploy_network", "netns",
     "scenario.deploy_network"),
]


@pytest.mark.parametrize(("case", "key", "value", "named"), BAD, ids=[b[0] for b in BAD])
def test_bad_space_exits_2_with_one_line_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture, case: str, key: str, value, named: str
) -> None:
    path = write_space(tmp_path / "bad.yaml")
    raw = yaml.safe_load(path.read_text())
    _mutate(raw, key, value)
    path.write_text(yaml.safe_dump(raw))
    store = tmp_path / "store"
    code = main(["pareto", "--space", str(path), "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and named in lines[0], lines[0]
    assert not store.exists(), "nothing may be written for a bad space"


def test_missing_file_and_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["pareto", "--space", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert main(["pareto", "--space", str(broken)]) == 2
    assert "broken.yaml" in capsys.readouterr().err


def test_set_override_validation(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path / "s.yaml"))
    values = space.with_overrides({"update_codec": "int8", "local_epochs": "2"})
    assert values["update_codec"] == "int8" and values["local_epochs"] == 2
    assert values["precision"] == "fp32"  # first choice
    assert values["lr"] == 0.01  # low bound
    config = space.trial_config(values)
    assert config.leverages["clients_per_round"] == 2  # not in the space: all clients
    from sweeper.errors import SpaceError

    with pytest.raises(SpaceError, match="--set update_codec=zip"):
        space.with_overrides({"update_codec": "zip"})
    with pytest.raises(SpaceError, match="--set warp: unknown leverage"):
        space.with_overrides({"warp": "9"})


def test_when_samples_a_leverage_only_where_its_condition_holds(tmp_path: Path) -> None:
    import optuna

    path = write_space(tmp_path / "s.yaml", leverages={
        "strategy": {"choices": ["fedavg", "fedprox", "fedadam"]},
        "proximal_mu": {"low": 0.001, "high": 1.0, "log": True, "when": {"strategy": "fedprox"}},
        "server_lr": {"low": 0.001, "high": 0.1, "when": {"strategy": ["fedadam"]}},
        "update_codec": {"choices": ["none", "topk"]},
        "topk_ratio": {"low": 0.01, "high": 0.1, "when": {"update_codec": "topk"}},
    })
    space = load_space(path)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = space.sample(trial)
        assert ("proximal_mu" in values) == (values["strategy"] == "fedprox")
        assert ("server_lr" in values) == (values["strategy"] == "fedadam")
        assert ("topk_ratio" in values) == (values["update_codec"] == "topk")
        assert set(trial.params) == set(values)
        seen.add(values["strategy"])
        study.tell(trial, [0.5, 1.0])
    assert seen == {"fedavg", "fedprox", "fedadam"}
    defaults = space.with_overrides({"strategy": "fedprox"})
    assert defaults["proximal_mu"] == 0.001 and "server_lr" not in defaults


@pytest.mark.parametrize(("when", "named"), [
    ({"stratgy": "fedprox"}, "leverages.proximal_mu.when.stratgy"),
    ({"strategy": "fedsgd"}, "leverages.proximal_mu.when.strategy"),
])
def test_bad_when_is_one_line_naming_the_key(tmp_path: Path, when: dict, named: str) -> None:
    from sweeper.errors import SpaceError

    path = write_space(tmp_path / "s.yaml", leverages={
        "strategy": {"choices": ["fedavg", "fedprox"]},
        "proximal_mu": {"low": 0.0, "high": 1.0, "when": when},
    })
    with pytest.raises(SpaceError, match=named.replace(".", r"\.")):
        load_space(path)


def test_clients_per_round_count_or_fraction(tmp_path: Path) -> None:
    import optuna.distributions as od

    path = write_space(tmp_path / "s.yaml", leverages={
        "clients_per_round": {"low": 0.25, "high": 1.0}})
    space = load_space(path)
    assert space.distributions()["clients_per_round"] == od.FloatDistribution(0.25, 1.0)
    assert space.trial_config({"clients_per_round": 0.5}).leverages["clients_per_round"] == 1
    assert space.trial_config({"clients_per_round": 2}).leverages["clients_per_round"] == 2


def test_parallel_auto_fills_the_cluster(tmp_path: Path, ray_cluster: str) -> None:
    from sweeper.orchestrate import auto_parallel

    space = load_space(write_space(tmp_path / "s.yaml", budget={"trials": 2,
                                                                 "parallel": "auto"}))
    assert space.parallel == 0
    assert auto_parallel(1) == 2 and auto_parallel(2) == 1 and auto_parallel(4) == 1


def test_full_space_covers_every_searchable_leverage() -> None:
    from sweeper.config import LEVERAGES

    space = load_space(Path(__file__).parents[1] / "search_spaces" / "full.yaml")
    names = {lev.name for lev in space.leverages}
    node_settings = {"cpu_freq_khz", "cpu_governor", "gpu_power_limit_w", "rounds",
                     "beta_1", "beta_2", "tau"}
    assert set(LEVERAGES) - names <= node_settings
    assert space.parallel == 0 and space.sampler == "nsga2" and space.constraints


def test_fixed_values_are_not_searched_but_recorded(tmp_path: Path) -> None:
    import optuna

    from sweeper.errors import SpaceError

    space = load_space(write_space(tmp_path / "s.yaml", leverages={
        "precision": {"choices": ["fp32", "bf16"]}, "lr": {"value": 0.07},
        "update_codec": {"value": "int8"}}))
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(5):
        values = space.sample(study.ask())
        assert values["lr"] == 0.07 and values["update_codec"] == "int8"
    assert space.trial_config(values).leverages["lr"] == 0.07
    with pytest.raises(SpaceError, match=r"leverages\.lr\.value"):
        load_space(write_space(tmp_path / "b.yaml", leverages={"lr": {"value": 99.0}}))


@pytest.mark.parametrize("fixed, per_round", [(1, 1), (3, 3), (1.0, 4), (0.5, 2)])
def test_a_fixed_clients_per_round_count_is_a_count(tmp_path: Path, fixed, per_round) -> None:
    """`{value: 1}` is one client, `{value: 1.0}` all of them (it once read as 1.0)."""
    path = write_space(tmp_path / "s.yaml",
                       scenario={"dataset": "synthetic", "num_clients": 4, "rounds": 1},
                       leverages={"clients_per_round": {"value": fixed},
                                  "lr": {"low": 0.01, "high": 0.1}})
    space = load_space(path)
    config = space.trial_config(space.default_values({"lr": 0.05}))
    assert config.leverages["clients_per_round"] == per_round
