"""The apps as the deployment runtime loads them (`module:attribute` in the FAB's
pyproject.toml). The ServerApp runs in a `flwr-serverapp` process, so it takes the trial's
config from the run config and writes its per-round accounting to a JSON file the trial
reads; its body is `server_app.serve`, the one every engine runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from sweeper.config import TrialConfig
from sweeper.fl.client_app import app as client_app
from sweeper.fl.relay import RelayedWatcher
from sweeper.fl.server_app import Watchers, serve
from sweeper.fl.strategy import RoundStats
from sweeper.fl.wire import WireCounters

TRIAL_CONFIG = "trial-config"
STATS_PATH = "stats-path"
WIRE_INTERFACES = "wire-interfaces"  # the clients' host-side veths, by partition, comma-joined
WATCHER_DIR = "watcher-dir"  # where the trial's RoundWatcher is asked (see fl/relay.py)

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
    serve(grid, config, done, watchers if watchers.watchers else None)


def write_stats(path: Path, rounds: list[RoundStats]) -> None:
    """Written whole, then renamed: a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([stats.to_dict() for stats in rounds]))
    os.replace(tmp, path)


def read_stats(path: Path) -> list[RoundStats]:
    return [RoundStats.from_dict(d) for d in json.loads(path.read_text())]
