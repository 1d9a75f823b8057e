"""SuperNodes placed by Ray (`deploy_placement: ray`): one actor per SuperNode, spread over
the cluster's nodes, owning its `flower-supernode` and `flower-superexec` processes (they
die with the actor, see `processes`). The trial's driver keeps the SuperLink beside it.

Each actor is handed the trial's CA certificate and its SuperNode's private key as
arguments of its `start` call (in memory: nothing goes through a shared file system). It
writes them, owner-only, into a temporary directory of its own, and deletes that as soon as
the SuperNode has read them (it keeps them in memory), or when the start fails.

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

from sweeper.engines.deployment.processes import Processes, free_port, wait_listening
from sweeper.engines.deployment.tls import write_private
from sweeper.errors import SweeperError

START_TIMEOUT_S = 60.0

# (partition, the SuperNode's local Runtime API port, CA file, private key file) ->
# [(process name, argv), ...], the SuperNode first.
Commands = Callable[[int, int, Path | None, Path | None], list[tuple[str, list[str]]]]


@ray.remote(num_cpus=0)
class SuperNodeHost:
    """Runs one SuperNode's processes on the node Ray placed it on."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="sweeper-supernode-"))
        self.procs = Processes(self.home)
        self.secrets: Path | None = None

    def start(self, partition: int, commands: Commands, env: dict[str, str],
              ca: bytes, key: bytes) -> dict:
        env = {**os.environ, **env, "FLWR_HOME": str(self.home / "flwr"),
               "HOME": str(self.home)}
        self.secrets = Path(tempfile.mkdtemp(prefix="sweeper-supernode-keys-"))  # 0700
        placed = {"node": ray.util.get_node_ip_address(), "actor_pid": os.getpid(),
                  "credentials": str(self.secrets)}
        try:
            port = free_port()
            argvs = commands(partition, port, write_private(self.secrets / "ca.pem", ca),
                             write_private(self.secrets / "supernode.key", key))
            for name, argv in argvs:
                self.procs.start(name, argv, env)
            # Its Runtime API opens after it has parsed its arguments, read both files.
            supernode = self.procs.procs[argvs[0][0]]
            if not wait_listening(supernode, port, START_TIMEOUT_S):
                why = self.procs.exited() or f"not ready after {START_TIMEOUT_S:g} s"
                raise SweeperError(f"{argvs[0][0]} on {placed['node']}: {why}")
        finally:
            self._forget_secrets()
        return placed

    def _forget_secrets(self) -> None:
        if self.secrets is not None:
            shutil.rmtree(self.secrets, ignore_errors=True)

    def exited(self) -> str | None:
        return self.procs.exited()

    def close(self) -> None:
        self._forget_secrets()
        self.procs.close()
        shutil.rmtree(self.home, ignore_errors=True)


class RaySuperNodes:
    """The trial's SuperNode actors: started together, polled, and closed (then killed)."""

    def __init__(self, clients: int, commands: Commands, env: dict[str, str],
                 ca: bytes, keys: list[bytes]) -> None:
        if not ray.is_initialized():
            raise SweeperError("deploy_placement: ray needs a running Ray cluster (a sweep "
                               "runs its trials on one; `sweeper trial` does not)")
        self.actors = [SuperNodeHost.options(scheduling_strategy="SPREAD").remote()
                       for _ in range(clients)]
        try:
            self.placement = ray.get([actor.start.remote(partition, commands, env, ca,
                                                         keys[partition])
                                      for partition, actor in enumerate(self.actors)])
        except BaseException:
            self.close()
            raise

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
