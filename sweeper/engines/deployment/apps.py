"""The apps as the deployment runtime loads them (`module:attribute` in the FAB's
pyproject.toml). The ServerApp runs in a `flwr-serverapp` process, so it takes the trial's
config from the run config and writes its per-round accounting to a JSON file the trial
reads; its body is `server_app.serve`, the one every engine runs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from sweeper.config import TrialConfig
from sweeper.engines import in_partition_order
from sweeper.engines.deployment.doorbell import Doorbell, ring
from sweeper.engines.deployment.relay import RelayedWatcher
from sweeper.engines.deployment.wire import WireCounters
from sweeper.fl.client_app import app as client_app
from sweeper.fl.server_app import Watchers, serve
from sweeper.fl.strategy import RoundStats

TRIAL_CONFIG = "trial-config"
STATS_PATH = "stats-path"
WIRE_INTERFACES = "wire-interfaces"  # the clients' host-side veths, by partition, comma-joined
WATCHER_DIR = "watcher-dir"  # where the trial's RoundWatcher is asked (see relay.py)
NODE_PARTITIONS = "node-partitions"  # JSON {node id: partition}, the roster (roster.py)

server_app = ServerApp()
__all__ = ["client_app", "server_app", "write_stats"]


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    config = TrialConfig.from_json(str(context.run_config[TRIAL_CONFIG]))
    path = Path(str(context.run_config[STATS_PATH]))
    interfaces = [i for i in str(context.run_config.get(WIRE_INTERFACES, "")).split(",") if i]
    counters = WireCounters(interfaces) if interfaces else None
    relay_dir = str(context.run_config.get(WATCHER_DIR, ""))
    relayed = RelayedWatcher(Path(relay_dir)) if relay_dir else None

    def done(rounds: list[RoundStats]) -> None:
        if counters is not None:
            counters.finish()
            for stats in rounds:
                stats.wire_by_client = counters.by_round.get(stats.round, {})
        write_stats(path, rounds)

    watchers = Watchers(counters, relayed)
    partition_of = {int(node): partition for node, partition in
                    json.loads(str(context.run_config.get(NODE_PARTITIONS, "{}"))).items()}
    serve(PromptGrid(grid, partition_of), config, done,
          watchers if watchers.watchers else None)


class PromptGrid(Grid):
    """The SuperLink's grid, pulling replies every few milliseconds (backing off to
    `SLOWEST_PULL_S` while clients train) where Flower's `send_and_receive` waits a fixed
    3 s between pulls. With a doorbell (`doorbell.py`) it rings the SuperNodes when it
    pushed messages and pulls when a SuperNode rings that it pushed a reply. It lists nodes
    in partition order (`roster.py`), as the simulation engine does."""

    FIRST_PULL_S = 0.02
    SLOWEST_PULL_S = 0.2

    def __init__(self, grid: Grid, partition_of: dict[int, int] | None = None) -> None:
        self.grid = grid
        self.partition_of = partition_of or {}
        self.bell = Doorbell("server")

    def set_run(self, run) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return in_partition_order(self.grid.get_node_ids(), self.partition_of)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        pushed = self.grid.push_messages(messages)
        ring("node-*")
        return pushed

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        wait_s = self.SLOWEST_PULL_S if self.bell.works else self.FIRST_PULL_S
        while waiting and (deadline is None or time.monotonic() < deadline):
            pulled = list(self.pull_messages(waiting))
            replies.extend(pulled)
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            if waiting:
                self.bell.wait(wait_s)
                wait_s = min(wait_s * 1.5, self.SLOWEST_PULL_S)
        return replies


def write_stats(path: Path, rounds: list[RoundStats]) -> None:
    """Written whole, then renamed: a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([stats.to_dict() for stats in rounds]))
    os.replace(tmp, path)


def read_stats(path: Path) -> list[RoundStats]:
    return [RoundStats.from_dict(d) for d in json.loads(path.read_text())]
