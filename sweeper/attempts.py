"""Per-trial limits and what happened to a trial's Ray task besides its own result.

Driver side: `Deadlines` kills a trial that runs longer than `budget.trial_timeout_s` (from
its start on the worker, see `mark_started`) and says why.
Worker side: `memory_limit` holds the trial's process to `budget.memory_per_trial_mb`, and
`annotate` records a Ray retry (a worker or node lost mid-trial: Ray re-runs the task) in
the result, so that MLflow (tag `sweeper.ray_retries`), Optuna and `sweeper list` show it.
A retry starts from scratch: the result, energy included, is the last attempt's alone (the
lost attempt's joules are not metered, never added twice).
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import ray
from ray.experimental import internal_kv

from sweeper.result import TrialResult

RETRIES_KEY = "ray_retries"  # in TrialResult.info: how many times Ray re-ran the task
INTERRUPTIONS_KEY = "interruptions"  # in TrialResult.info: drivers stopped while it ran
OOM_MARKS = ("MemoryError", "can't allocate memory", "Cannot allocate memory",
             "std::bad_alloc", "can't start new thread")


def ray_options(memory_mb: int | None) -> dict[str, Any]:
    """Ray's reservation for a trial with a memory limit (Ray then never places more
    trials on a node than its memory holds)."""
    return {} if memory_mb is None else {"memory": memory_mb * 2**20}


def attempt_number() -> int:
    """In a Ray task: 0 for its first run, n for Ray's n-th retry of it."""
    worker = ray._private.worker.global_worker  # no public API in Ray 2.55
    with contextlib.suppress(Exception):
        return int(worker.core_worker.get_current_task_attempt_number())
    return 0


def _address_space_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def memory_limit(memory_mb: int | None) -> Iterator[None]:
    """Hold this (reused Ray worker) process to `memory_mb` more address space than it has
    now (soft RLIMIT_AS), and put the previous limit back after. An allocation past it
    fails in the trial (MemoryError, torch's "can't allocate memory"), which makes it a
    failed result rather than a worker the kernel kills."""
    if memory_mb is None:
        yield
        return
    before = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_kb() * 1024 + memory_mb * 2**20
    if before[1] != resource.RLIM_INFINITY:
        limit = min(limit, before[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)


def annotate(result: TrialResult, memory_mb: int | None) -> TrialResult:
    """In the Ray task, after the trial: its retry count, and an out-of-memory failure
    named as such."""
    retries = attempt_number()
    if retries:
        result.info[RETRIES_KEY] = retries
    if (memory_mb is not None and result.status == "failed"
            and any(mark in result.reason for mark in OOM_MARKS)):
        result.reason = (f"out of memory: the trial needed more than budget.memory_per_trial_mb"
                         f" = {memory_mb} MB ({result.reason})")
    return result


def record(trial: optuna.Trial, result: TrialResult) -> None:
    """In the driver, before the repeat is stored: Ray's retries of it are added up on its
    configuration (user attr `ray_retries`, counted by `sweeper list`), and a configuration
    a stopped driver left behind says so in its result (`interruptions`), hence in MLflow."""
    retries = result.info.get(RETRIES_KEY, 0)
    attrs = trial.user_attrs
    if retries:
        trial.set_user_attr(RETRIES_KEY, attrs.get(RETRIES_KEY, 0) + retries)
    if attrs.get(INTERRUPTIONS_KEY):
        result.info[INTERRUPTIONS_KEY] = attrs[INTERRUPTIONS_KEY]


STARTED_NAMESPACE = "sweeper_trial_started"  # Ray KV: task id -> the round it is in (0: none yet)


def mark_started() -> None:
    """In the Ray task, first thing: its trial has left Ray's queue (`Deadlines`)."""
    task_id = ray.get_runtime_context().get_task_id()
    with contextlib.suppress(Exception):  # no KV (a test calling the function directly)
        internal_kv._internal_kv_put(task_id, b"0", namespace=STARTED_NAMESPACE)


class RoundProgress:
    """A `fl.server_app.RoundWatcher` that puts the round a trial's federation is in under
    its task's `mark_started` key, for the driver's live view (`trial_round`). Outside a
    Ray task (`sweeper trial`) it does nothing."""

    def __init__(self) -> None:
        self.task_id: str | None = None
        # get_runtime_context() would start a local Ray here; get_task_id() warns in a driver
        if ray.is_initialized():
            with contextlib.suppress(Exception):
                context = ray.get_runtime_context()
                if context.worker.mode == ray.WORKER_MODE:
                    self.task_id = context.get_task_id()

    def round_started(self, server_round: int) -> None:
        if self.task_id is not None:
            with contextlib.suppress(Exception):  # a view that lags must not fail the trial
                internal_kv._internal_kv_put(self.task_id, str(server_round).encode(),
                                             namespace=STARTED_NAMESPACE)

    def round_ended(self, server_round: int) -> None:
        return None

    def stop_reason(self, stats: Any) -> None:
        return None


def trial_round(task_id: str) -> int | None:
    """In the driver: the round the trial of this Ray task is in (0: started, no round
    yet), None while it waits in Ray's queue, has ended, or Ray is gone."""
    with contextlib.suppress(Exception):
        if ray.is_initialized():
            value = internal_kv._internal_kv_get(task_id, namespace=STARTED_NAMESPACE)
            return None if value is None else int(value)
    return None


class Deadlines:
    """`budget.trial_timeout_s`, counted from when the trial starts on its worker, not from
    its hand-over to Ray: a trial queued behind other work (a shared cluster) is not timed
    out for waiting. The task says it started in Ray's KV store (`mark_started`); a watcher
    thread notes when it sees that (driver clock: no skew between nodes), and cancels a
    task still running `limit_s` later (its worker killed, no retry: Ray does not retry a
    cancelled task), which makes the driver's wait return; its result is then a failure
    saying so. Without a limit it still notes starts: `ran_s` is how long a trial that
    could not report (killed, its worker lost) may have run."""

    POLL_S = 0.5

    def __init__(self, limit_s: float | None) -> None:
        self.limit_s = limit_s
        self.since: dict[ray.ObjectRef, float | None] = {}  # None: still queued
        self.submitted: dict[ray.ObjectRef, float] = {}
        self.killed: set[ray.ObjectRef] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._watch, name="sweeper-deadlines", daemon=True).start()

    def started(self, ref: ray.ObjectRef) -> None:
        with self._lock:
            self.since[ref] = None
            self.submitted[ref] = time.monotonic()

    def ran_s(self, ref: ray.ObjectRef) -> float:
        """At most how long the trial of `ref` has run: since its start was seen, plus the
        watcher's poll interval; since it was handed to Ray if its start was never seen."""
        with self._lock:
            since = self.since.get(ref)
            began = self.submitted.get(ref, time.monotonic())
        return time.monotonic() - (began if since is None else since - self.POLL_S)

    def _watch(self) -> None:
        while not self._closed.wait(self.POLL_S):
            with self._lock:
                watched = list(self.since.items())
            for ref, since in watched:
                if since is None:
                    if _has_started(ref):
                        with self._lock:
                            if ref in self.since:
                                self.since[ref] = time.monotonic()
                elif (self.limit_s is not None and time.monotonic() - since > self.limit_s
                      and ref not in self.killed):
                    self.killed.add(ref)
                    with contextlib.suppress(Exception):  # it ended, or Ray is going down
                        ray.cancel(ref, force=True)

    def outcome(self, ref: ray.ObjectRef, result: TrialResult) -> TrialResult:
        """The result of a finished task: a killed one's is the timeout (a task that ended
        before the kill landed keeps its own result)."""
        with self._lock:
            self.since.pop(ref, None)
            self.submitted.pop(ref, None)
        with contextlib.suppress(Exception):
            internal_kv._internal_kv_del(ref.task_id().hex(), namespace=STARTED_NAMESPACE)
        if ref in self.killed:
            self.killed.discard(ref)
            if result.status == "failed":
                return TrialResult.failed(f"timeout: still running {self.limit_s:g} s after it"
                                          " started (budget.trial_timeout_s); killed")
        return result

    def close(self) -> None:
        self._closed.set()


def _has_started(ref: ray.ObjectRef) -> bool:
    with contextlib.suppress(Exception):
        return internal_kv._internal_kv_get(ref.task_id().hex(),
                                            namespace=STARTED_NAMESPACE) is not None
    return False
