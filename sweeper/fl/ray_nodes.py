"""SuperNodes placed by Ray (`deploy_placement: ray`): one actor per SuperNode, spread over
the cluster's nodes, owning its `flower-supernode` and `flower-superexec` processes (they
die with the actor, see `processes`). The trial's driver keeps the SuperLink beside it.

The actors reserve no CPU: the SuperNodes' work runs in processes of their own, outside
Ray's accounting, as a real edge device would run outside the server's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import ray

from sweeper.errors import SweeperError
from sweeper.fl.processes import Processes, free_port

# (partition, the SuperNode's local Runtime API port) -> [(process name, argv), ...]
Commands = Callable[[int, int], list[tuple[str, list[str]]]]


@ray.remote(num_cpus=0)
class SuperNodeHost:
    """Runs one SuperNode's processes on the node Ray placed it on."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="sweeper-supernode-"))
        self.procs = Processes(self.home)

    def start(self, partition: int, commands: Commands, env: dict[str, str]) -> dict:
        env = {**os.environ, **env, "FLWR_HOME": str(self.home / "flwr"),
               "HOME": str(self.home)}
        for name, argv in commands(partition, free_port()):
            self.procs.start(name, argv, env)
        return {"node": ray.util.get_node_ip_address(), "actor_pid": os.getpid()}

    def exited(self) -> str | None:
        return self.procs.exited()

    def close(self) -> None:
        self.procs.close()
        shutil.rmtree(self.home, ignore_errors=True)


class RaySuperNodes:
    """The trial's SuperNode actors: started together, polled, and closed (then killed)."""

    def __init__(self, clients: int, commands: Commands, env: dict[str, str]) -> None:
        if not ray.is_initialized():
            raise SweeperError("deploy_placement: ray needs a running Ray cluster (a sweep "
                               "runs its trials on one; `sweeper trial` does not)")
        self.actors = [SuperNodeHost.options(scheduling_strategy="SPREAD").remote()
                       for _ in range(clients)]
        self.placement = ray.get([actor.start.remote(partition, commands, env)
                                  for partition, actor in enumerate(self.actors)])

    def exited(self) -> str | None:
        for partition, why in enumerate(ray.get([a.exited.remote() for a in self.actors])):
            if why:
                return f"{why} (on {self.placement[partition]['node']})"
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            ray.get([actor.close.remote() for actor in self.actors], timeout=30)
        for actor in self.actors:
            ray.kill(actor)
