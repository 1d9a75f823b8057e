"""The federation kept between the trials of a process.

Flower's deployment model is a long-running federation that accepts run after run: starting
a SuperLink, a SuperNode per client and their SuperExecs (each importing Flower, the last
also torch) cost tens of CPU-seconds per trial. So a trial's federation is kept when the
trial ends well, and the next trial of the same process reuses it if it asks for the same
processes (`shape`) and all of them are still up; otherwise it is closed and a new one is
started. A trial that fails or is stopped closes its federation (its processes may be in
any state). What a reused federation cannot leak is the SuperExecs' concern
(`superexec.py`: every task is a fresh fork of a zygote warmed for its own trial only);
Flower gives each run its own run id, contexts and node state.

One federation at most is kept, so memory does not grow with the shapes a sweep tries, and
for `IDLE_CLOSE_S` at most: a Ray worker outlives its sweep, and an idle federation's
polls would be in the node meters of later trials. Two minutes, because a sweep mixing
engines runs simulation trials on the same worker in between (with 30 s, federations were
started again); idle, a federation's processes wait on their doorbells and look once every
3 s. It also closes when the process exits
(`atexit`), and its processes die with the process in any case (`processes.py`).
"""

from __future__ import annotations

import atexit
import json
import threading
from typing import Protocol

from sweeper.config import TrialConfig

IDLE_CLOSE_S = 120.0
SHAPE_FIELDS = ("num_clients", "deploy_network", "network_profile", "deploy_tls",
                "deploy_node_auth", "deploy_placement")


class Closable(Protocol):
    def exited(self) -> str | None: ...

    def close(self) -> None: ...


def shape(config: TrialConfig) -> str:
    """What decides a federation's processes: trials of the same shape can share one."""
    scenario = config.scenario
    return json.dumps({name: getattr(scenario, name) for name in SHAPE_FIELDS})


class Kept:
    """At most one idle federation, by shape."""

    def __init__(self) -> None:
        self.shape: str | None = None
        self.federation: Closable | None = None
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None

    def take(self, wanted: str) -> Closable | None:
        """The kept federation if it has the shape `wanted` and all its processes are up
        (it is no longer kept); else None, and whatever was kept is closed."""
        federation = self._release()
        if federation is not None and self.shape == wanted and federation.exited() is None:
            return federation
        if federation is not None:
            federation.close()
        return None

    def keep(self, wanted: str, federation: Closable) -> None:
        self.close()
        with self.lock:
            self.shape, self.federation = wanted, federation
            self.timer = threading.Timer(IDLE_CLOSE_S, self._expire, (federation,))
            self.timer.daemon = True
            self.timer.start()

    def close(self) -> None:
        federation = self._release()
        if federation is not None:
            federation.close()

    def _release(self) -> Closable | None:
        with self.lock:
            federation, self.federation = self.federation, None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            return federation

    def _expire(self, federation: Closable) -> None:
        with self.lock:
            if self.federation is not federation:
                return  # taken or replaced meanwhile
            self.federation, self.timer = None, None
        federation.close()


KEPT = Kept()
atexit.register(KEPT.close)
