"""What a trial reserves on the Ray cluster, against what the cluster has.

A trial is one Ray task reserving `scenario.cpus_per_trial` CPUs and, with
`budget.memory_per_trial_mb`, that memory (`orchestrate.py`; the SuperNode actors of
`deploy_placement: ray` reserve nothing), and a task runs on one node: a reservation no
node holds would wait in Ray's queue for ever, silently, so it is refused before anything
starts. A reservation the cluster could hold but that other work
holds now only waits, and `wait_first` says so.
"""

from __future__ import annotations

from collections.abc import Callable

import ray

from sweeper.errors import SpaceError
from sweeper.space import SearchSpace

WAIT_CHECK_S = 2.0  # with no trial finished for this long, look whether ours are queued


def refuse_unsatisfiable(space: SearchSpace, shutdown: bool = False) -> None:
    """SpaceError when no live node of the connected Ray cluster has the CPUs (and memory,
    with `budget.memory_per_trial_mb`) a trial reserves (with `shutdown`, the Ray started
    for the sweep is stopped first)."""
    problem = _unsatisfiable(space, [node["Resources"] for node in ray.nodes()
                                     if node["Alive"]])
    if problem is None:
        return
    if shutdown:
        ray.shutdown()
    raise SpaceError(f"{space.path}: {problem}")


def _unsatisfiable(space: SearchSpace, nodes: list[dict[str, float]]) -> str | None:
    cpus, memory_mb = space.scenario.cpus_per_trial, space.memory_per_trial_mb
    largest = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
    if cpus > largest:
        return (f"scenario.cpus_per_trial {cpus} exceeds the largest node of this Ray "
                f"cluster ({largest:g} CPUs)")
    if memory_mb is None:
        return None
    roomiest = max((node.get("memory", 0.0) for node in nodes
                    if node.get("CPU", 0.0) >= cpus), default=0.0) / 2**20
    if memory_mb > roomiest:
        return (f"budget.memory_per_trial_mb {memory_mb} exceeds the memory Ray offers on "
                f"any node with {cpus} CPUs ({roomiest:.0f} MiB)")
    return None


def queued_trials(cpus_per_trial: int) -> int:
    """How many tasks of a trial's shape Ray holds back for want of free CPUs (the
    autoscaler's demand, which the GCS keeps even with no dashboard); 0 when unknown."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    try:
        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception:  # a status line must never stop a sweep
        return 0
    return sum(int(request.count) for demand in status.resource_demands.ray_task_actor_demand
               for request in demand.bundles_by_count
               if request.bundle.get("CPU") == cpus_per_trial)


def waiting_line(cpus_per_trial: int, in_flight: int) -> str | None:
    """'waiting for N CPUs ...' when some of the `in_flight` trials are queued by Ray."""
    queued = min(queued_trials(cpus_per_trial), in_flight)
    free = ray.available_resources().get("CPU", 0.0)
    if not queued or free >= cpus_per_trial:  # the demand lags: about to be scheduled
        return None
    total = ray.cluster_resources().get("CPU", 0.0)
    cpus = f"{cpus_per_trial} CPU" + ("s" if cpus_per_trial > 1 else "")
    return (f"waiting for {cpus}: {queued} trial(s) queued, {free:g} of the cluster's "
            f"{total:g} CPUs free (other work holds them)")


def wait_first(refs: list[ray.ObjectRef], cpus_per_trial: int,
               show: Callable[[str], None], check_s: float = WAIT_CHECK_S,
               tick: Callable[[], None] | None = None) -> None:
    """`ray.wait` for the first of `refs` to finish; every `check_s` without one, `tick()`
    and `show` the waiting line if Ray holds some of them back for want of CPUs (and
    once, that the wait is over)."""
    waited = False
    while not ray.wait(refs, num_returns=1, timeout=check_s)[0]:
        if tick is not None:
            tick()
        line = waiting_line(cpus_per_trial, len(refs))
        if line or waited:
            show(line or "CPUs free: the waiting trial(s) started")
        waited = line is not None
