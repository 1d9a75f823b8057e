"""YAML search space -> validated `SearchSpace` -> Optuna distributions.

Every problem is reported as `SpaceError("<file>: <key>: <what is wrong>")`, before anything
is written anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import optuna
import optuna.distributions as od
import yaml

from sweeper.config import LEVERAGES, Scenario, TrialConfig, resolve_leverages
from sweeper.energy import NODE_METERS, link_shape
from sweeper.errors import SpaceError, SweeperError
from sweeper.names import checked_name
from sweeper.result import OBJECTIVE_METRICS
from sweeper.samplers import SAMPLERS

TOP_KEYS = {"name", "description", "objectives", "budget", "sampler", "scenario", "leverages",
            "constraints", "pruning", "target_accuracy"}
REQUIRED_TOP_KEYS = ("name", "objectives", "leverages")
SCENARIO_CHOICES = {
    "dataset": ("synthetic", "speech_commands"),
    "task": ("12", "35"),
    "partition": ("speaker", "iid", "dirichlet"),
    "engine": LEVERAGES["engine"].choices,
    "deploy_network": ("loopback", "netns"),
    "deploy_placement": ("local", "ray"),
    "isolation": ("shared", "node"),
}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "minimize" | "maximize"


@dataclass(frozen=True)
class Constraint:
    """`metric >= bound` or `metric <= bound`, given to Optuna as a value <= 0 when met."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        return self.bound - value if self.op == ">=" else value - self.bound

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class Leverage:
    name: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    default: Any = None
    is_int: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (leverage, allowed values), all hold

    def active(self, values: dict[str, Any]) -> bool:
        return all(values.get(name) in allowed for name, allowed in self.when)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log,
                                   step=self.step)

    def distribution(self) -> od.BaseDistribution:
        if self.choices:
            return od.CategoricalDistribution(list(self.choices))
        if self.is_int:
            return od.IntDistribution(int(self.low), int(self.high), log=self.log,
                                      step=int(self.step or 1))
        return od.FloatDistribution(float(self.low), float(self.high), log=self.log,
                                    step=self.step)

    def default_value(self) -> Any:
        if self.default is not None:
            return self.default
        return self.choices[0] if self.choices else self.low

    def holds(self, value: Any) -> bool:
        """`value` is among the choices, or within [low, high] (NaN is not)."""
        if self.choices:
            return value in self.choices
        return bool(self.low <= value <= self.high)

    def bounds(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        return f"within [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    name: str
    objectives: tuple[Objective, ...]
    trials: int
    parallel: int  # trials at a time; 0 = "auto": as many as the Ray cluster's CPUs allow
    sampler: str
    sampler_seed: int
    scenario: Scenario
    seed: int
    leverages: tuple[Leverage, ...]
    constraints: tuple[Constraint, ...] = ()
    population_size: int = 50  # nsga2
    wall_clock_s: float | None = None  # stop launching trials after this long
    energy_budget_j: float | None = None  # stop launching once finished trials used this
    prune_max_accuracy: float | None = None  # pruning.max_accuracy (see fronts.PruneRule)
    repeats: int = 1  # runs of each configuration, seeds scenario.seed + r (sweeper.repeats)
    target_accuracy: float | None = None  # for the objective energy_to_accuracy_j
    trial_timeout_s: float | None = None  # a trial still running then is killed, failed
    memory_per_trial_mb: int | None = None  # Ray's reservation; more fails the trial
    description: str = ""  # the space's own words (the MLflow experiment's description)

    def searched(self) -> list[str]:
        """The leverages the sweep varies: more than one choice, or a range (not `value:`)."""
        return [lev.name for lev in self.leverages
                if len(lev.choices) > 1 or (not lev.choices and lev.low != lev.high)]

    def distributions(self) -> dict[str, od.BaseDistribution]:
        return {lev.name: lev.distribution() for lev in self.leverages}

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every leverage whose `when:` holds, in declaration order (define-by-run,
        so Optuna only ever sees a conditional leverage where it means something)."""
        values: dict[str, Any] = {}
        for lev in self.leverages:
            if lev.active(values):
                values[lev.name] = lev.suggest(trial)
        return values

    def trial_config(self, sampled: dict[str, Any], repeat: int = 0) -> TrialConfig:
        """The trial of `sampled` values; repeat r runs with seed `scenario.seed + r`."""
        return TrialConfig(self.scenario, resolve_leverages(sampled, self.scenario),
                           self.seed + repeat)

    def default_values(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """`given` values, and for every other active leverage its default."""
        values: dict[str, Any] = dict(given or {})
        for lev in self.leverages:
            if lev.name not in values and lev.active(values):
                values[lev.name] = lev.default_value()
        return values

    def with_overrides(self, overrides: dict[str, str], force: bool = False) -> dict[str, Any]:
        """The space's defaults with `name=value` strings from the command line applied.
        A value outside the catalogue's limits is refused; one outside the space (a declared
        leverage's range or choices) too, unless `force` (then see `outside`)."""
        given = {}
        for name, text in overrides.items():
            if name not in LEVERAGES:
                raise SpaceError(f"--set {name}: unknown leverage (known: {', '.join(LEVERAGES)})")
            given[name] = _parse_override(name, text, self.scenario.num_clients)
        problems = self.outside(given)
        if problems and not force:
            raise SpaceError(f"{self.path}: --set {problems[0]}; --force runs it anyway, "
                             "tagged outside the space")
        return self.default_values(given)

    def outside(self, values: dict[str, Any]) -> list[str]:
        """'name=value: not within ..., the space's leverages.name' for each value a
        leverage declared in the space does not hold (leverages the space leaves out are not
        searched: any value the catalogue allows is theirs)."""
        by_name = {lev.name: lev for lev in self.leverages}
        return [f"{name}={f'{value:g}' if isinstance(value, float) else value}: not "
                f"{by_name[name].bounds()}, the space's leverages.{name}"
                for name, value in values.items()
                if name in by_name and not by_name[name].holds(value)]


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpaceError(f"{where}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise SpaceError(f"{where}:{line} not valid YAML") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: top level must be a mapping")
    _no_unknown(where, "", raw, TOP_KEYS)
    for key in REQUIRED_TOP_KEYS:
        if key not in raw:
            raise SpaceError(f"{where}: {key}: missing")
    name = _typed(where, "name", raw["name"], str)
    try:
        checked_name(name, "name")
    except SweeperError as exc:
        raise SpaceError(f"{where}: {exc}") from None
    objectives = _objectives(where, raw["objectives"])
    budget = _mapping(where, "budget", raw.get("budget", {}))
    _no_unknown(where, "budget.", budget, {"trials", "parallel", "wall_clock_s", "energy_j",
                                           "repeats", "trial_timeout_s",
                                           "memory_per_trial_mb"})
    trial_timeout_s = _positive_float(where, "budget.trial_timeout_s",
                                      budget.get("trial_timeout_s"))
    memory_per_trial_mb = (None if budget.get("memory_per_trial_mb") is None else
                           _positive_int(where, "budget.memory_per_trial_mb",
                                         budget["memory_per_trial_mb"]))
    repeats = _positive_int(where, "budget.repeats", budget.get("repeats", 1))
    wall_clock_s, energy_budget_j = (_positive_float(where, f"budget.{key}", budget.get(key))
                                     for key in ("wall_clock_s", "energy_j"))
    trials = _positive_int(where, "budget.trials", budget.get("trials", 10))
    parallel_raw = budget.get("parallel", 1)
    parallel = 0 if parallel_raw == "auto" else _positive_int(where, "budget.parallel",
                                                               parallel_raw)
    sampler = _mapping(where, "sampler", raw.get("sampler", {}))
    _no_unknown(where, "sampler.", sampler, {"name", "seed", "population_size"})
    population_size = _positive_int(where, "sampler.population_size",
                                    sampler.get("population_size", 50))
    sampler_name = _typed(where, "sampler.name", sampler.get("name", "tpe"), str)
    if sampler_name not in SAMPLERS:
        raise SpaceError(f"{where}: sampler.name: {sampler_name!r} is not one of "
                         f"{tuple(SAMPLERS)}")
    sampler_seed = _typed(where, "sampler.seed", sampler.get("seed", 0), int)
    scenario_raw = dict(_mapping(where, "scenario", raw.get("scenario", {})))
    seed = _typed(where, "scenario.seed", scenario_raw.pop("seed", 0), int)
    scenario = _scenario(where, scenario_raw)
    leverages = _leverages(where, raw["leverages"])
    if sampler_name == "grid":
        for lev in leverages:
            if not lev.choices and not lev.is_int and lev.step is None:
                raise SpaceError(f"{where}: leverages.{lev.name}: sampler grid needs choices, "
                                 "an int range or a step")
    constraints = _constraints(where, raw.get("constraints", []))
    pruning = _mapping(where, "pruning", raw.get("pruning", {}))
    _no_unknown(where, "pruning.", pruning, {"max_accuracy"})
    prune_max_accuracy = _positive_float(where, "pruning.max_accuracy",
                                         pruning.get("max_accuracy"))
    if prune_max_accuracy is not None and {(o.metric, o.direction) for o in objectives} != {
            ("accuracy", "maximize"), ("energy_j", "minimize")}:
        raise SpaceError(f"{where}: pruning: needs exactly the objectives accuracy (maximize) "
                         "and energy_j (minimize)")
    target_accuracy = _positive_float(where, "target_accuracy", raw.get("target_accuracy"))
    if target_accuracy is not None and target_accuracy > 1:
        raise SpaceError(f"{where}: target_accuracy: a fraction in (0, 1], got {target_accuracy}")
    if target_accuracy is None and "energy_to_accuracy_j" in (
            [o.metric for o in objectives] + [c.metric for c in constraints]):
        raise SpaceError(f"{where}: target_accuracy: required by energy_to_accuracy_j "
                         "(the accuracy whose first reaching is priced)")
    _attributable(where, scenario, leverages)
    _clients_fit(where, scenario, leverages)
    return SearchSpace(path, name, objectives, trials, parallel, sampler_name, sampler_seed,
                       scenario, seed, leverages, constraints, population_size, wall_clock_s,
                       energy_budget_j, prune_max_accuracy, repeats, target_accuracy,
                       trial_timeout_s=trial_timeout_s, memory_per_trial_mb=memory_per_trial_mb,
                       description=str(raw.get("description") or "").strip())


def _attributable(where: str, scenario: Scenario, leverages: tuple[Leverage, ...]) -> None:
    """`isolation: node` promises one trial per node, so that node meters are the trial's
    own: refuse a space whose trials would spread over nodes other trials run on."""
    if scenario.isolation != "node":
        return
    engines = {scenario.engine} | {c for lev in leverages if lev.name == "engine"
                                   for c in lev.choices}
    if scenario.deploy_placement == "ray" and "deployment" in engines:
        raise SpaceError(f"{where}: scenario.isolation: node cannot be kept with "
                         "deploy_placement: ray (SuperNodes run on other trials' nodes)")


def _clients_fit(where: str, scenario: Scenario, leverages: tuple[Leverage, ...]) -> None:
    """A count of clients per round above `scenario.num_clients` cannot be run."""
    for lev in leverages:
        if lev.name != "clients_per_round":
            continue
        largest = max(v for v in (*lev.choices, lev.high) if v is not None)  # > 1: a count
        if largest > scenario.num_clients:
            key = "value" if lev.choices else "high"
            raise SpaceError(f"{where}: leverages.clients_per_round.{key}: {largest:g} "
                             f"exceeds scenario.num_clients ({scenario.num_clients})")


def _positive_float(where: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    value = _typed(where, key, value, float)
    if value <= 0:
        raise SpaceError(f"{where}: {key}: must be > 0")
    return value


def _constraints(where: str, raw: Any) -> tuple[Constraint, ...]:
    if not isinstance(raw, list):
        raise SpaceError(f"{where}: constraints: must be a list like ['accuracy >= 0.8']")
    out = []
    for i, text in enumerate(raw):
        parts = str(text).split()
        if len(parts) != 3 or parts[1] not in (">=", "<="):
            raise SpaceError(f"{where}: constraints[{i}]: {text!r} is not 'metric >= number' "
                             "or 'metric <= number'")
        if parts[0] not in OBJECTIVE_METRICS:
            raise SpaceError(f"{where}: constraints[{i}]: unknown metric {parts[0]!r}")
        try:
            bound = float(parts[2])
        except ValueError:
            raise SpaceError(f"{where}: constraints[{i}]: {parts[2]!r} is not a number") from None
        out.append(Constraint(parts[0], parts[1], bound))
    return tuple(out)


def _no_unknown(where: str, prefix: str, raw: dict, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise SpaceError(
                f"{where}: {prefix}{key}: unknown key (allowed: {', '.join(sorted(allowed))})"
            )


def _mapping(where: str, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise SpaceError(f"{where}: {key}: must be a mapping, got {type(value).__name__}")
    return value


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise SpaceError(
            f"{where}: {key}: must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _positive_int(where: str, key: str, value: Any) -> int:
    value = _typed(where, key, value, int)
    if value < 1:
        raise SpaceError(f"{where}: {key}: must be >= 1, got {value}")
    return value


def _objectives(where: str, raw: Any) -> tuple[Objective, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpaceError(f"{where}: objectives: must be a non-empty list")
    out = []
    for i, item in enumerate(raw):
        key = f"objectives[{i}]"
        item = _mapping(where, key, item)
        _no_unknown(where, f"{key}.", item, {"metric", "direction"})
        metric = _typed(where, f"{key}.metric", item.get("metric"), str)
        if metric not in OBJECTIVE_METRICS:
            raise SpaceError(f"{where}: {key}.metric: unknown metric {metric!r} "
                             f"(known: {', '.join(OBJECTIVE_METRICS)})")
        direction = item.get("direction")
        if direction not in ("minimize", "maximize"):
            raise SpaceError(f"{where}: {key}.direction: must be minimize or maximize, "
                             f"got {direction!r}")
        out.append(Objective(metric, direction))
    if len({o.metric for o in out}) != len(out):
        raise SpaceError(f"{where}: objectives: a metric is listed twice")
    return tuple(out)


def _scenario(where: str, raw: dict) -> Scenario:
    types = {f.name: f.type for f in fields(Scenario)}
    _no_unknown(where, "scenario.", raw, set(types) | {"seed"})
    for key, value in raw.items():
        declared = str(types[key])
        if "None" in declared and value is None:
            continue
        kind = {"int": int, "float": float, "bool": bool}.get(declared.split(" ")[0], str)
        value = _typed(where, f"scenario.{key}", value, kind)
        if key in SCENARIO_CHOICES and value not in SCENARIO_CHOICES[key]:
            raise SpaceError(f"{where}: scenario.{key}: {value!r} is not one of "
                             f"{SCENARIO_CHOICES[key]}")
        if kind is int and not isinstance(value, bool) and value < 1 and key != "corpus_seed":
            raise SpaceError(f"{where}: scenario.{key}: must be >= 1, got {value}")
        if kind is float and value <= 0:
            raise SpaceError(f"{where}: scenario.{key}: must be > 0, got {value}")
    scenario = Scenario(**raw)
    meters = [m.strip() for m in scenario.meters.split(",")]
    if scenario.meters not in ("auto", "modeled") and not set(meters) <= set(NODE_METERS):
        raise SpaceError(f"{where}: scenario.meters: {scenario.meters!r} is not auto, modeled "
                         f"or a list of {', '.join(NODE_METERS)} (e.g. "
                         f"'{','.join(NODE_METERS)}')")
    if scenario.dataset == "speech_commands" and not scenario.data_dir:
        raise SpaceError(f"{where}: scenario.data_dir: required for dataset speech_commands")
    from sweeper.energy import load_profiles

    profiles = load_profiles()
    if scenario.host_profile not in profiles.hosts:
        raise SpaceError(f"{where}: scenario.host_profile: unknown profile "
                         f"{scenario.host_profile!r} (known: {', '.join(profiles.hosts)})")
    for key, known in (("device_profile", profiles.devices),
                       ("carbon_region", profiles.carbon)):
        value = getattr(scenario, key)
        if value is not None and value not in known:
            raise SpaceError(f"{where}: scenario.{key}: unknown {value!r} "
                             f"(known: {', '.join(known)})")
    if scenario.network_profile not in profiles.networks:
        raise SpaceError(f"{where}: scenario.network_profile: unknown profile "
                         f"{scenario.network_profile!r} (known: {', '.join(profiles.networks)})")
    if scenario.deploy_network == "netns":
        try:
            link_shape(scenario.network_profile)
        except SweeperError as exc:
            raise SpaceError(f"{where}: scenario.deploy_network: netns: {exc}") from None
    return scenario


def _leverages(where: str, raw: Any) -> tuple[Leverage, ...]:
    raw = _mapping(where, "leverages", raw)
    if not raw:
        raise SpaceError(f"{where}: leverages: must name at least one leverage")
    leverages: list[Leverage] = []
    for name, body in raw.items():
        body = _mapping(where, f"leverages.{name}", body)
        when = _when(where, name, body.pop("when", None), leverages)
        leverages.append(_leverage(where, name, body, when))
    return tuple(leverages)


def _when(where: str, name: str, raw: Any,
          earlier: list[Leverage]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """`when: {other: value}` or `{other: [v1, v2]}`; `other` must be declared above."""
    if raw is None:
        return ()
    key = f"leverages.{name}.when"
    raw = _mapping(where, key, raw)
    if not raw:
        raise SpaceError(f"{where}: {key}: must name at least one leverage")
    by_name = {lev.name: lev for lev in earlier}
    out = []
    for other, allowed in raw.items():
        if other not in by_name:
            raise SpaceError(f"{where}: {key}.{other}: not a leverage declared above {name}")
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        choices = by_name[other].choices
        for value in allowed:
            if not choices or value not in choices:
                raise SpaceError(f"{where}: {key}.{other}: {value!r} is not one of its "
                                 f"choices {list(choices)}")
        out.append((other, allowed))
    return tuple(out)


def _leverage(where: str, name: str, body: dict,
              when: tuple[tuple[str, tuple[Any, ...]], ...]) -> Leverage:
    key = f"leverages.{name}"
    spec = LEVERAGES.get(name)
    if spec is None:
        raise SpaceError(f"{where}: {key}: unknown leverage (known: {', '.join(LEVERAGES)})")
    if "value" in body:  # fixed: not searched, still recorded with every trial
        _no_unknown(where, f"{key}.", body, {"value", "when"})
        value = body["value"]
        if spec.kind == "categorical":
            if value not in spec.choices:
                raise SpaceError(f"{where}: {key}.value: {value!r} is not one of "
                                 f"{list(spec.choices)}")
        else:
            value = _typed(where, f"{key}.value", value,
                           int if spec.kind in ("int", "int_or_fraction")
                           and isinstance(value, int) else float)
            if not spec.low <= value <= spec.high:
                raise SpaceError(f"{where}: {key}.value: must lie within "
                                 f"[{spec.low}, {spec.high}]")
        return Leverage(name, choices=(value,), default=value, when=when)
    if spec.kind == "categorical":
        _no_unknown(where, f"{key}.", body, {"choices", "default", "when"})
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: {key}.choices: must be a non-empty list")
        for choice in choices:
            if choice not in spec.choices:
                raise SpaceError(f"{where}: {key}.choices: {choice!r} is not one of "
                                 f"{list(spec.choices)}")
        default = body.get("default")
        if default is not None and default not in choices:
            raise SpaceError(f"{where}: {key}.default: {default!r} is not among the choices")
        return Leverage(name, choices=tuple(choices), default=default, when=when)
    _no_unknown(where, f"{key}.", body, {"low", "high", "log", "step", "default", "when"})
    for bound in ("low", "high"):
        if bound not in body:
            raise SpaceError(f"{where}: {key}.{bound}: missing")
    kind = int if spec.kind == "int" else float
    if spec.kind == "int_or_fraction":  # ints are counts, floats fractions of the clients
        kind = int if isinstance(body["low"], int) and isinstance(body["high"], int) else float
        if kind is float and not 0 < body["low"] <= body["high"] <= 1:
            raise SpaceError(f"{where}: {key}: a fraction needs 0 < low <= high <= 1")
    low = _typed(where, f"{key}.low", body["low"], kind)
    high = _typed(where, f"{key}.high", body["high"], kind)
    if low > high:
        raise SpaceError(f"{where}: {key}: low ({low}) > high ({high})")
    if low < spec.low or high > spec.high:
        raise SpaceError(f"{where}: {key}: must lie within [{spec.low}, {spec.high}]")
    log = _typed(where, f"{key}.log", body.get("log", False), bool)
    step = body.get("step")
    if step is not None:
        step = _typed(where, f"{key}.step", step, kind)
        if step <= 0:
            raise SpaceError(f"{where}: {key}.step: must be > 0")
        if log:
            raise SpaceError(f"{where}: {key}: log and step cannot be combined")
    if log and low <= 0:
        raise SpaceError(f"{where}: {key}.low: must be > 0 with log: true")
    default = body.get("default")
    if default is not None:
        default = _typed(where, f"{key}.default", default, kind)
        if not low <= default <= high:
            raise SpaceError(f"{where}: {key}.default: {default} is outside [{low}, {high}]")
    return Leverage(name, low=low, high=high, log=log, step=step, default=default,
                    is_int=kind is int, when=when)


def _parse_override(name: str, text: str, num_clients: int) -> Any:
    """A `--set` value, within the catalogue's limits (what the engine can run: no
    `--force` lifts them)."""
    spec = LEVERAGES[name]
    try:
        if spec.kind == "int":
            value: Any = int(text)
        elif spec.kind == "float":
            value = float(text)
        elif spec.kind == "int_or_fraction":
            value = float(text) if "." in text else int(text)
        elif spec.choices and isinstance(spec.choices[0], bool):
            value = {"true": True, "false": False}[text.lower()]
        elif spec.choices and isinstance(spec.choices[0], int):  # e.g. sample_rate
            value = int(text)
        else:
            value = text
    except (ValueError, KeyError):
        kind = f"one of {list(spec.choices)}" if spec.choices else spec.kind
        raise SpaceError(f"--set {name}={text}: must be {kind}") from None
    if spec.kind == "categorical":
        if value not in spec.choices:
            raise SpaceError(f"--set {name}={text}: not one of {list(spec.choices)}")
        return value
    low, high = spec.low, spec.high
    limits = f"[{low:g}, {high:g}] (the catalogue's limits"
    if spec.kind == "int_or_fraction" and isinstance(value, int):  # a count of clients
        low, high, limits = 1, num_clients, f"[1, {num_clients}] (scenario.num_clients"
    elif spec.kind == "int_or_fraction":  # a fraction of the clients
        low, high, limits = math.ulp(0.0), 1.0, "(0, 1] (a fraction of the clients"
    if not low <= value <= high:
        raise SpaceError(f"--set {name}={text}: not within {limits}; --force does not lift "
                         "them)")
    return value
