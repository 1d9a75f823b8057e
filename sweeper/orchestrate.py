"""Ray: run a sweep's trials with their resources, `budget.parallel` at a time, resumably.

Why Ray core tasks with Optuna ask/tell rather than Ray Tune: the driver alone must write to
the Optuna and MLflow stores (SQLite stays safe), in the order tell-then-log. With ask/tell
the driver owns that order directly; each trial is one Ray task reserving the CPUs its
federation needs (`num_cpus`), system failures (a dead worker) are retried by Ray
(`max_retries`), and resume is a read of the two stores (see `study.recover_interrupted`
and `Tracker.logged_trials`). Tune would add its own experiment state beside them.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweeper import attempts
from sweeper import study as studies
from sweeper.config import TrialConfig
from sweeper.environment import sweep_environment
from sweeper.errors import SweeperError
from sweeper.fronts import PruneRule
from sweeper.interrupts import Interrupts, record_stop
from sweeper.repeats import aggregate, spent_j
from sweeper.resources import refuse_unsatisfiable, wait_first
from sweeper.result import MeterInfo, TrialResult, energy_to_accuracy
from sweeper.space import SearchSpace
from sweeper.store_lock import store_lock
from sweeper.tracking import Tracker, ui_url
from sweeper.trial import charge_unreported, prepare, run_trial

RAY_SYSTEM_RETRIES = 2


@dataclass
class SweepProgress:
    """What the driver knows at any moment; handed to the `on_progress` callback."""

    sweep: str
    budget: int
    done: int = 0
    failed: int = 0
    retried: int = 0  # Ray re-ran a trial's task (its worker or node was lost)
    running: dict[int, dict[str, Any]] = field(default_factory=dict)
    # trial number -> repeat -> Ray task id (hex) of each running repeat: the live view
    # reads its round there (attempts.trial_round)
    tasks: dict[int, dict[int, str]] = field(default_factory=dict)
    front: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    dashboard_url: str | None = None
    last_event: str = ""


@dataclass
class SweepOutcome:
    sweep: str
    parent_run_id: str
    study: optuna.Study
    trial_runs: dict[int, str]  # trial number -> MLflow child run id
    interrupted: bool = False  # stopped by a signal before its budget was used


def new_sweep_name(space: SearchSpace) -> str:
    return f"{space.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"


def start_ray(address: str | None, num_cpus: int | None = None,
              dashboard: bool = True, sweep: str | None = None) -> tuple[bool, str | None]:
    """Connect to (or start) Ray. Returns (started_here, dashboard_url). A Ray started here
    listens on 127.0.0.1 only; one at `address` is shown the token that `RAY_AUTH_MODE=token`
    and `RAY_AUTH_TOKEN_PATH` in the environment name, if they do. The driver's Ray job is
    named after `sweep` (its namespace and metadata, on the Ray dashboard's jobs page)."""
    import ipaddress

    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    if ray.is_initialized():
        return False, None
    env = {k: os.environ[k] for k in ("SWEEPER_CACHE", "SWEEPER_PROFILES") if k in os.environ}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
    if sweep:
        kwargs["namespace"] = f"sweeper-{sweep}"
        kwargs["job_config"] = ray.job_config.JobConfig(metadata={"sweeper.sweep": sweep})
    if address:
        if os.environ.get("RAY_AUTH_MODE") == "token":
            # Ray 2.55 reads RAY_AUTH_* when it is imported; `--cluster` sets them later
            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        context = ray.init(address=address, log_to_driver=False, **kwargs)
    else:
        # Ray 2.55's servers bind to the node's address (loopback only when that is
        # 127.0.0.1), and ray.init turns _node_ip_address="127.0.0.1" into the host's address
        # (services.resolve_ip_for_localhost) unless Ray thinks clusters are off, as on macOS
        clusters, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
        try:
            context = ray.init(num_cpus=num_cpus, include_dashboard=dashboard,
                               dashboard_host="127.0.0.1", log_to_driver=False, **kwargs)
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = clusters
        node = context.address_info["node_ip_address"]
        if not ipaddress.ip_address(node).is_loopback:
            ray.shutdown()
            raise SweeperError(f"the local Ray took the address {node}, not 127.0.0.1: it "
                               "would listen on the network; not started")
    url = context.dashboard_url
    return True, (f"http://{url}" if url and not url.startswith("http") else url)


# After a trial: (its nodes, UTC start, UTC end) -> {"joules": J, "meter": provenance, ...}
NodeEnergySource = Callable[[list[str], dt.datetime, dt.datetime], dict[str, Any]]


@ray.remote
def _remote_trial(config_json: str, prune: PruneRule | None = None,
                  memory_mb: int | None = None) -> dict[str, Any]:
    attempts.mark_started()  # budget.trial_timeout_s runs from here, not from the queue
    start = dt.datetime.now(dt.UTC)
    with attempts.memory_limit(memory_mb):
        result = run_trial(TrialConfig.from_json(config_json), prune)
    attempts.annotate(result, memory_mb)
    # where and when it ran, for meters read afterwards over that window (node energy)
    result.info["placement"] = {"nodes": [platform.node()], "start_utc": start.isoformat(),
                                "end_utc": dt.datetime.now(dt.UTC).isoformat(),
                                "ray_node_id": ray.get_runtime_context().get_node_id(),
                                "pid": os.getpid()}
    return result.to_dict()


def attribute_node_energy(result: TrialResult, source: NodeEnergySource) -> None:
    """Add the whole-node joules of the trial's window as a measured component. A reading
    that fails or does not cover the window leaves `node_energy_j` NaN, with the reason in
    `info["node_energy"]["reason"]` (never 0: no number stands for missing data)."""
    placement = result.info.get("placement")
    if result.status == "failed" or not placement:
        return
    try:
        reading = source(placement["nodes"], dt.datetime.fromisoformat(placement["start_utc"]),
                         dt.datetime.fromisoformat(placement["end_utc"]))
    except Exception as exc:  # a meter outage must not take the sweep down
        result.info["node_energy"] = {"reason": f"{type(exc).__name__}: {exc}"}
        return
    result.info["node_energy"] = reading
    joules = float(reading.get("joules", float("nan")))
    if math.isnan(joules):
        reading.setdefault("reason", "the node energy source returned no value")
        return
    result.node_energy_j = joules
    result.meters["node_energy_j"] = MeterInfo(str(reading["meter"]), "measured")


def prune_rule(space: SearchSpace, study: optuna.Study) -> PruneRule | None:
    """The space's prune rule against the front as it stands (None: no pruning)."""
    if space.prune_max_accuracy is None:
        return None
    front = []
    for trial in studies.pareto_trials(study):
        result = studies.stored_result(trial)
        if result is not None:
            front.append((result.accuracy, result.energy_j))
    return PruneRule(space.prune_max_accuracy, tuple(front))


@dataclass
class Configuration:
    """One configuration Optuna proposed (an Optuna trial) and its repeats."""

    trial: optuna.Trial
    sampled: dict[str, Any]
    results: dict[int, TrialResult] = field(default_factory=dict)  # finished repeats
    running: set[int] = field(default_factory=set)

    def decided(self) -> bool:
        """A failed or pruned repeat decides the configuration: no further repeat starts."""
        return any(r.status != "ok" for r in self.results.values())

    def next_repeat(self, repeats: int) -> int | None:
        if self.decided():
            return None
        return next((r for r in range(repeats)
                     if r not in self.results and r not in self.running), None)

    def finished(self, repeats: int) -> bool:
        return not self.running and (self.decided() or len(self.results) == repeats)

    def outcome(self, space: SearchSpace) -> TrialResult:
        done = sorted(self.results)
        return aggregate([self.results[r] for r in done], [space.seed + r for r in done])


def with_target(result: TrialResult, space: SearchSpace) -> TrialResult:
    """`energy_to_accuracy_j` of a repeat, where the space names a target accuracy."""
    if space.target_accuracy is not None and result.status != "failed":
        result.energy_to_accuracy_j = energy_to_accuracy(result.rounds, space.target_accuracy)
    return result


class NodeSlots:
    """`isolation: node`: at most one trial per Ray node at a time, so that a node's
    counters (RAPL, wattmeters) see one trial only. Each trial is pinned to a free node
    (node affinity, not soft); without isolation every trial goes where Ray puts it."""

    def __init__(self, exclusive: bool, cpus_per_trial: int) -> None:
        self.exclusive, self.cpus_per_trial = exclusive, cpus_per_trial
        self.busy: dict[ray.ObjectRef, str] = {}

    def free_node(self) -> str | bool | None:
        """A node id to pin the next trial to, None for anywhere, False for no room."""
        if not self.exclusive:
            return None
        taken = set(self.busy.values())
        return next((node["NodeID"] for node in ray.nodes()
                     if node["Alive"] and node["NodeID"] not in taken
                     and node["Resources"].get("CPU", 0) >= self.cpus_per_trial), False)

    def options(self, node: str | None) -> dict[str, Any]:
        if node is None:
            return {}
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}

    def taken(self, ref: ray.ObjectRef, node: str | None) -> None:
        if node is not None:
            self.busy[ref] = node

    def released(self, ref: ray.ObjectRef) -> None:
        self.busy.pop(ref, None)


def run_sweep(space: SearchSpace, store: Path, sweep: str | None = None, resume: bool = False,
              ray_address: str | None = None, dashboard: bool = True,
              on_progress: Callable[[SweepProgress], None] | None = None,
              on_prepare: Callable[[int, int], None] | None = None,
              node_energy: NodeEnergySource | None = None,
              command: Sequence[str] | None = None,
              stop: Interrupts | None = None) -> SweepOutcome:
    """Run (or resume) a sweep until `budget.trials` configurations have finished, each run
    `budget.repeats` times. With `node_energy` (only meaningful in `isolation: node` mode,
    one trial per node), each finished repeat gets the whole-node joules of its window
    before it is stored and logged. `command`: the command line recorded with the sweep's
    software (default: `sys.argv`). `stop`: the signals that stop it (see interrupts.py)."""
    if node_energy is None and any(o.metric == "node_energy_j" for o in space.objectives):
        raise SweeperError("objective node_energy_j: no node energy source; run with "
                           "--cluster (Grid'5000, Kwollect) and scenario.isolation: node")
    sweep = sweep or new_sweep_name(space)
    if resume:  # an unknown sweep is refused before anything is made or started
        studies.load_existing(sweep, store)
    started_ray, dashboard_url = start_ray(ray_address, dashboard=dashboard, sweep=sweep)
    if stop is not None:
        stop.install()  # again: connecting to Ray put its own SIGTERM handler in
    refuse_unsatisfiable(space, shutdown=started_ray)  # Ray would queue it for ever
    prepare(space.scenario, space.seed, on_prepare)  # data once, before any trial
    study, tracker, parent = _open_stores(space, Path(store), sweep, resume, command)
    # trials run by a resumed driver record how its environment differs from the sweep's
    elsewhere = tracker.environment_changes(parent, sweep_environment()) if resume else None
    trial_runs = _relog_missing(study, tracker, parent, space)
    configs: list[Configuration] = []  # in flight: taken over (in `try`, below) or started

    exclusive = space.scenario.isolation == "node"
    slots = space.parallel or auto_parallel(space.scenario.cpus_per_trial, exclusive)
    nodes = NodeSlots(exclusive, space.scenario.cpus_per_trial)
    progress = SweepProgress(sweep, space.trials, dashboard_url=dashboard_url)
    _refresh(progress, study)
    notify = on_progress or (lambda _p: None)
    notify(progress)
    pending: dict[ray.ObjectRef, tuple[Configuration, int, TrialConfig]] = {}
    stop = stop or Interrupts()
    deadlines = attempts.Deadlines(space.trial_timeout_s)

    started = time.monotonic()

    def may_start() -> bool:
        """No budget is used up (running trials finish and are kept; no new one starts)."""
        reason = wall_clock_stop(space.wall_clock_s, time.monotonic() - started)
        if reason is None and space.energy_budget_j is not None:
            reason = energy_budget_stop(space.energy_budget_j, _spent_j(study, configs))
        if reason is not None:
            progress.last_event = reason
        return reason is None

    def next_work() -> tuple[Configuration, int] | None:
        """The next repeat to start: of a configuration in flight (started configurations
        finish their repeats whatever the budgets), else of a new one."""
        for config in configs:
            repeat = config.next_repeat(space.repeats)
            if repeat is not None:
                return config, repeat
        if not may_start():
            return None
        if grid_exhausted(study.sampler):
            progress.last_event = "grid exhausted"
            return None
        finished = sum(studies.is_finished(t) for t in study.get_trials(deepcopy=False))
        if trials_reached(space.trials, finished, len(configs)):
            return None
        proposal = studies.ask_new(study, space)
        if proposal is None:
            progress.last_event = (f"every one of {studies.ASK_TRIES} proposals had run "
                                   "already: the space is exhausted")
            return None
        configs.append(Configuration(*proposal))
        return configs[-1], 0

    def fill_slots() -> None:
        while len(pending) < slots and not stop.requested:
            node = nodes.free_node()
            if node is False:
                progress.last_event = "isolation: node: every node runs a trial"
                return
            work = next_work()
            if work is None:
                return
            config, repeat = work
            trial_config = space.trial_config(config.sampled, repeat)
            ref = _remote_trial.options(
                # on the Ray dashboard, named as its MLflow run
                name=f"trial-{config.trial.number}" + (f"-repeat-{repeat}" if repeat else ""),
                num_cpus=space.scenario.cpus_per_trial, max_retries=RAY_SYSTEM_RETRIES,
                **nodes.options(node), **attempts.ray_options(space.memory_per_trial_mb),
            ).remote(trial_config.to_json(), prune_rule(space, study), space.memory_per_trial_mb)
            deadlines.started(ref)
            nodes.taken(ref, node)
            pending[ref] = (config, repeat, trial_config)
            config.running.add(repeat)
            progress.running[config.trial.number] = dict(config.sampled)
            progress.tasks.setdefault(config.trial.number, {})[repeat] = ref.task_id().hex()
            progress.last_event = f"trial {config.trial.number} started" + (
                f" (repeat {repeat + 1}/{space.repeats})" if space.repeats > 1 else "")

    def conclude_finished() -> list[Configuration]:
        done = [c for c in configs if c.finished(space.repeats) and c.results]
        for config in done:
            configs.remove(config)
            studies.tell(study, config.trial, space, config.outcome(space))
            progress.running.pop(config.trial.number, None)
            progress.tasks.pop(config.trial.number, None)
        return done

    def waiting(line: str) -> None:  # trials queued by Ray: other work holds the CPUs
        progress.last_event = line
        notify(progress)

    try:  # from the take-over on, a stop marks what is unfinished interrupted (finally)
        configs.extend(Configuration(live, space.sample(live), studies.stored_repeats(frozen))
                       for live, frozen in studies.running_trials(study))
        conclude_finished()  # taken over with every repeat done, but never told
        fill_slots()
        notify(progress)
        while pending:
            # the live view reads the trials' rounds in this thread (see live.LiveView)
            wait_first(list(pending), space.scenario.cpus_per_trial, waiting,
                       tick=lambda: notify(progress))
            # every repeat finished by now is stored and its slot refilled before any is
            # logged to MLflow: trials ending together do not wait on each other's logging
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            finished = []
            for ref in ready:
                config, repeat, trial_config = pending.pop(ref)
                nodes.released(ref)
                ran_s = deadlines.ran_s(ref)
                result = with_target(deadlines.outcome(ref, _collect(ref)), space)
                charge_unreported(result, trial_config, ran_s)
                attempts.record(config.trial, result)
                if elsewhere:
                    result.info["ran_elsewhere"] = elsewhere
                if node_energy is not None:
                    attribute_node_energy(result, node_energy)
                studies.store_repeat(config.trial, repeat, result)
                config.running.discard(repeat)
                progress.tasks.get(config.trial.number, {}).pop(repeat, None)
                config.results[repeat] = result
                finished.append((config.trial.number, repeat, trial_config, result))
            conclude_finished()
            fill_slots()
            for number, repeat, trial_config, result in finished:
                run_id = tracker.log_trial(parent, number, trial_config, result, repeat)
                if repeat == 0:
                    trial_runs[number] = run_id
                    studies.note_run(study, number, run_id, ui_url(
                        "", tracker.client.get_run(parent).info.experiment_id, run_id))
                progress.last_event = (f"trial {number} {result.status}"
                                       + (f": {result.reason}" if result.reason else ""))
            if finished:
                tracker.log_sweep_progress(parent, study, space)  # the parent run's metrics
            _refresh(progress, study)
            notify(progress)
    finally:
        deadlines.close()
        for ref in pending:
            ray.cancel(ref, force=True)
        record_stop([c.trial for c in configs], tracker, parent, stop.requested)
        if started_ray:
            ray.shutdown()
    return SweepOutcome(sweep, parent, study, trial_runs, stop.requested)


def _open_stores(space: SearchSpace, store: Path, sweep: str, resume: bool,
                 command: Sequence[str] | None) -> tuple[optuna.Study, Tracker, str]:
    """The sweep's Optuna study and MLflow parent run (made, with the sweep's file, params
    and environment, unless `resume`): (study, tracker, parent run id)."""
    store.mkdir(parents=True, exist_ok=True)
    with store_lock(store):  # a new sweep is whole (or gone) before another process looks
        study = studies.open_study(space, sweep, store, create=not resume)
        with studies.discarded_on_failure(sweep, store, created=not resume):
            tracker = Tracker(store)
            parent = tracker.sweep_run(sweep, create=not resume, space=space)
            if not resume:
                tracker.log_sweep_file(parent, space.path)
                tracker.log_sweep_params(parent, {
                    "space": space.path.name, "sampler": space.sampler,
                    "budget.trials": space.trials, "budget.repeats": space.repeats,
                    "budget.parallel": space.parallel})
                tracker.log_environment(parent, command)
    return study, tracker, parent


# The driver's stop conditions: whether a new configuration may start. Each is a plain
# function of numbers the driver holds (tests/test_stop_conditions.py, no Ray); the budget
# ones return the reason shown to the user, None while the budget lasts.

def wall_clock_stop(wall_clock_s: float | None, elapsed_s: float) -> str | None:
    """`budget.wall_clock_s` is used up after `elapsed_s` seconds of the sweep."""
    if wall_clock_s is not None and elapsed_s > wall_clock_s:
        return f"wall-clock budget of {wall_clock_s:g} s reached"
    return None


def energy_budget_stop(energy_budget_j: float | None, spent_j: float) -> str | None:
    """`budget.energy_j` is used up by the `spent_j` joules of every finished repeat."""
    if energy_budget_j is not None and spent_j >= energy_budget_j:
        return f"energy budget reached: {spent_j:.4g} J of {energy_budget_j:g} J"
    return None


def grid_exhausted(sampler: optuna.samplers.BaseSampler) -> bool:
    """The grid sampler has proposed every combination."""
    return bool(getattr(sampler, "exhausted", False))


def trials_reached(trials: int, finished: int, in_flight: int) -> bool:
    """`budget.trials` configurations have finished or are running."""
    return finished + in_flight >= trials


def _spent_j(study: optuna.Study, in_flight: list[Configuration]) -> float:
    """Joules used by every finished repeat so far, pruned and failed ones included."""
    spent = [spent_j(r) for t in study.get_trials(deepcopy=False) if studies.is_finished(t)
             for r in [studies.stored_result(t)] if r is not None]
    spent += [spent_j(r) for c in in_flight for r in c.results.values()]
    return sum(j for j in spent if not math.isnan(j))


def auto_parallel(cpus_per_trial: int, one_per_node: bool = False) -> int:
    """`parallel: auto`: floor(cluster CPUs / CPUs per trial), at least one; with
    `one_per_node`, the number of live nodes."""
    if one_per_node:
        return max(1, sum(node["Alive"] for node in ray.nodes()))
    return max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, cpus_per_trial))


def _collect(ref: ray.ObjectRef) -> TrialResult:
    try:
        return TrialResult.from_dict(ray.get(ref))
    except ray.exceptions.RayError as exc:  # the worker died even after Ray's retries
        first = next(iter(str(exc).splitlines()), "")  # a cancelled task's says nothing
        return TrialResult.failed(f"ray: {type(exc).__name__}: {first}")


def _refresh(progress: SweepProgress, study: optuna.Study) -> None:
    trials = [t for t in study.get_trials(deepcopy=False) if studies.is_finished(t)]
    progress.done = len(trials)
    progress.failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
    progress.retried = sum(t.user_attrs.get(attempts.RETRIES_KEY, 0)
                           for t in study.get_trials(deepcopy=False))
    progress.front = studies.pareto_trials(study)


def _relog_missing(study: optuna.Study, tracker: Tracker, parent: str,
                   space: SearchSpace) -> dict[int, str]:
    """Repeats stored in Optuna whose MLflow run was never finished (driver killed between
    the two writes) are logged now, from the result kept in Optuna. Returns trial number ->
    run id of its first repeat."""
    logged = tracker.logged_repeats(parent, clean_up=True)
    for trial in study.get_trials(deepcopy=False):
        for repeat, result in studies.stored_repeats(trial).items():
            if (trial.number, repeat) not in logged:
                config = space.trial_config(trial.params, repeat)
                logged[trial.number, repeat] = tracker.log_trial(parent, trial.number, config,
                                                                 result, repeat)
    runs = {number: run_id for (number, repeat), run_id in logged.items() if repeat == 0}
    experiment = tracker.client.get_run(parent).info.experiment_id
    for trial in study.get_trials(deepcopy=False):  # relogged, or from before they were noted
        run_id = runs.get(trial.number)
        if run_id is not None and trial.user_attrs.get(studies.RUN_ID_ATTR) != run_id:
            studies.note_run(study, trial.number, run_id, ui_url("", experiment, run_id))
    return runs
