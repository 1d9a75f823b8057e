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
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray

from sweeper import study as studies
from sweeper.config import TrialConfig
from sweeper.errors import SweeperError
from sweeper.fronts import PruneRule
from sweeper.result import MeterInfo, TrialResult
from sweeper.space import SearchSpace
from sweeper.tracking import Tracker
from sweeper.trial import prepare, run_trial

RAY_SYSTEM_RETRIES = 2


@dataclass
class SweepProgress:
    """What the driver knows at any moment; handed to the `on_progress` callback."""

    sweep: str
    budget: int
    done: int = 0
    failed: int = 0
    running: dict[int, dict[str, Any]] = field(default_factory=dict)
    front: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    dashboard_url: str | None = None
    last_event: str = ""


@dataclass
class SweepOutcome:
    sweep: str
    parent_run_id: str
    study: optuna.Study
    trial_runs: dict[int, str]  # trial number -> MLflow child run id


def new_sweep_name(space: SearchSpace) -> str:
    return f"{space.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"


def start_ray(address: str | None, num_cpus: int | None = None,
              dashboard: bool = True) -> tuple[bool, str | None]:
    """Connect to (or start) Ray. Returns (started_here, dashboard_url)."""
    if ray.is_initialized():
        return False, None
    env = {k: os.environ[k] for k in ("SWEEPER_CACHE", "SWEEPER_PROFILES") if k in os.environ}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
    if address:
        context = ray.init(address=address, log_to_driver=False, **kwargs)
    else:
        context = ray.init(num_cpus=num_cpus, include_dashboard=dashboard,
                           dashboard_host="127.0.0.1", log_to_driver=False, **kwargs)
    url = context.dashboard_url
    return True, (f"http://{url}" if url and not url.startswith("http") else url)


# After a trial: (its nodes, UTC start, UTC end) -> {"joules": J, "meter": provenance, ...}
NodeEnergySource = Callable[[list[str], dt.datetime, dt.datetime], dict[str, Any]]


@ray.remote
def _remote_trial(config_json: str, prune: PruneRule | None = None) -> dict[str, Any]:
    start = dt.datetime.now(dt.UTC)
    result = run_trial(TrialConfig.from_json(config_json), prune)
    # where and when it ran, for meters read afterwards over that window (node energy)
    result.info["placement"] = {"nodes": [platform.node()], "start_utc": start.isoformat(),
                                "end_utc": dt.datetime.now(dt.UTC).isoformat()}
    return result.to_dict()


def attribute_node_energy(result: TrialResult, source: NodeEnergySource) -> None:
    """Add the whole-node joules of the trial's window as a measured component. A reading
    that fails leaves the trial as it is, with the reason in `info["node_energy"]`."""
    placement = result.info.get("placement")
    if result.status == "failed" or not placement:
        return
    try:
        reading = source(placement["nodes"], dt.datetime.fromisoformat(placement["start_utc"]),
                         dt.datetime.fromisoformat(placement["end_utc"]))
    except Exception as exc:  # a meter outage must not take the sweep down
        result.info["node_energy"] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    result.node_energy_j = float(reading["joules"])
    result.meters["node_energy_j"] = MeterInfo(str(reading["meter"]), "measured")
    result.info["node_energy"] = reading


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


def run_sweep(space: SearchSpace, store: Path, sweep: str | None = None, resume: bool = False,
              ray_address: str | None = None, dashboard: bool = True,
              on_progress: Callable[[SweepProgress], None] | None = None,
              on_prepare: Callable[[int, int], None] | None = None,
              node_energy: NodeEnergySource | None = None) -> SweepOutcome:
    """Run (or resume) a sweep until `budget.trials` trials have finished. With
    `node_energy` (only meaningful in `isolation: node` mode, one trial per node), each
    finished trial gets the whole-node joules of its window before it is told and logged."""
    if node_energy is None and any(o.metric == "node_energy_j" for o in space.objectives):
        raise SweeperError("objective node_energy_j: no node energy source; run with "
                           "--cluster (Grid'5000, Kwollect) and scenario.isolation: node")
    sweep = sweep or new_sweep_name(space)
    prepare(space.scenario, space.seed, on_prepare)  # data once, before any trial
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    study = studies.open_study(space, sweep, store, create=not resume)
    tracker = Tracker(store)
    parent = tracker.sweep_run(sweep, create=not resume)
    if not resume:
        tracker.log_sweep_file(parent, space.path)
        tracker.log_sweep_params(parent, {"space": space.path.name, "sampler": space.sampler,
                                          "budget.trials": space.trials,
                                          "budget.parallel": space.parallel})
    studies.recover_interrupted(study)
    trial_runs = _relog_missing(study, tracker, parent, space)

    started_ray, dashboard_url = start_ray(ray_address, dashboard=dashboard)
    slots = space.parallel or auto_parallel(space.scenario.cpus_per_trial)
    progress = SweepProgress(sweep, space.trials, dashboard_url=dashboard_url)
    _refresh(progress, study)
    notify = on_progress or (lambda _p: None)
    notify(progress)
    pending: dict[ray.ObjectRef, tuple[optuna.Trial, TrialConfig]] = {}

    started = time.monotonic()

    def fill_slots() -> None:
        if space.wall_clock_s is not None and time.monotonic() - started > space.wall_clock_s:
            progress.last_event = f"wall-clock budget of {space.wall_clock_s:g} s reached"
            return  # running trials finish and are kept; no new one starts
        if space.energy_budget_j is not None:
            spent = sum(r.energy_j for r in (studies.stored_result(t) for t in
                        study.get_trials(deepcopy=False)) if r is not None and r.status == "ok")
            if spent >= space.energy_budget_j:
                progress.last_event = (f"energy budget reached: {spent:.4g} J of "
                                       f"{space.energy_budget_j:g} J")
                return
        if getattr(study.sampler, "exhausted", False):
            progress.last_event = "grid exhausted"
            return
        finished = sum(studies.is_finished(t) for t in study.get_trials(deepcopy=False))
        while len(pending) < slots and finished + len(pending) < space.trials:
            trial = study.ask()
            config = space.trial_config(space.sample(trial))
            ref = _remote_trial.options(
                num_cpus=space.scenario.cpus_per_trial, max_retries=RAY_SYSTEM_RETRIES,
            ).remote(config.to_json(), prune_rule(space, study))
            pending[ref] = (trial, config)
            progress.running[trial.number] = dict(trial.params)
            progress.last_event = f"trial {trial.number} started"

    try:
        fill_slots()
        notify(progress)
        while pending:
            ray.wait(list(pending), num_returns=1)
            # every trial finished by now is told and its slot refilled before any is
            # logged to MLflow: trials ending together do not wait on each other's logging
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            finished = []
            for ref in ready:
                trial, config = pending.pop(ref)
                result = _collect(ref)
                if node_energy is not None:
                    attribute_node_energy(result, node_energy)
                studies.tell(study, trial, space, result)
                progress.running.pop(trial.number, None)
                finished.append((trial, config, result))
            fill_slots()
            for trial, config, result in finished:
                trial_runs[trial.number] = tracker.log_trial(parent, trial.number, config,
                                                             result)
                progress.last_event = (f"trial {trial.number} {result.status}"
                                       + (f": {result.reason}" if result.reason else ""))
            _refresh(progress, study)
            notify(progress)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_ray:
            ray.shutdown()
    return SweepOutcome(sweep, parent, study, trial_runs)


def auto_parallel(cpus_per_trial: int) -> int:
    """`parallel: auto`: floor(cluster CPUs / CPUs per trial), at least one."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, cpus_per_trial))


def _collect(ref: ray.ObjectRef) -> TrialResult:
    try:
        return TrialResult.from_dict(ray.get(ref))
    except ray.exceptions.RayError as exc:  # the worker died even after Ray's retries
        return TrialResult.failed(f"ray: {type(exc).__name__}: {str(exc).splitlines()[0]}")


def _refresh(progress: SweepProgress, study: optuna.Study) -> None:
    trials = [t for t in study.get_trials(deepcopy=False) if studies.is_finished(t)]
    progress.done = len(trials)
    progress.failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
    progress.front = studies.pareto_trials(study)


def _relog_missing(study: optuna.Study, tracker: Tracker, parent: str,
                   space: SearchSpace) -> dict[int, str]:
    """Trials told to Optuna whose MLflow run was never finished (driver killed between
    the two writes) are logged now, from the result kept in Optuna."""
    logged = tracker.logged_trials(parent, clean_up=True)
    for trial in study.get_trials(deepcopy=False):
        if not studies.is_finished(trial) or trial.number in logged:
            continue
        result = studies.stored_result(trial)
        if result is not None:
            config = space.trial_config(trial.params)
            logged[trial.number] = tracker.log_trial(parent, trial.number, config, result)
    return logged
