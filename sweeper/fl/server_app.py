"""The ServerApp: the trial's Flower strategy over its clients, with centralized evaluation
on the test split after every round. The per-round accounting is handed to `on_done`."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Protocol

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from sweeper.config import TrialConfig
from sweeper.fl.codecs import build_codec
from sweeper.fl.strategy import RoundStats, accounted
from sweeper.fl.task import (
    downlink_codec,
    load_arrays,
    model_to_arrays,
    test_data,
    uplink_codec,
)
from sweeper.kws import compute_threads, evaluate, new_model


class RoundWatcher(Protocol):
    """Told when each round starts and ends (e.g. to read a node's energy counters); what
    `round_ended` returns is kept as the round's `node_j`. `stop_reason` is asked after
    each round: a reason ends the federation there (the rounds so far are kept)."""

    def round_started(self, server_round: int) -> None: ...

    def round_ended(self, server_round: int) -> dict[str, float] | None: ...

    def stop_reason(self, stats: RoundStats) -> str | None: ...


class Watchers:
    """Several `RoundWatcher`s as one: all are told; the last `node_j` and the first stop
    reason win."""

    def __init__(self, *watchers: RoundWatcher | None) -> None:
        self.watchers = [w for w in watchers if w is not None]

    def round_started(self, server_round: int) -> None:
        for watcher in self.watchers:
            watcher.round_started(server_round)

    def round_ended(self, server_round: int) -> dict[str, float] | None:
        node_j = None
        for watcher in self.watchers:
            node_j = watcher.round_ended(server_round) or node_j
        return node_j

    def stop_reason(self, stats: RoundStats) -> str | None:
        for watcher in self.watchers:
            reason = watcher.stop_reason(stats)
            if reason:
                return reason
        return None


class _StopFederation(Exception):
    pass


def divergence(stats: RoundStats) -> str | None:
    """Why training diverged in this round (a NaN or infinite training loss, or test loss
    of the aggregated model), if it did: the federation stops there, the trial is
    `diverged` (a NaN model never comes back)."""
    losses = (("training loss", stats.train_loss if stats.clients_ok else 0.0),
              ("test loss", stats.loss))
    bad = next((f"{name} is {value}" for name, value in losses if not math.isfinite(value)),
               None)
    return f"round {stats.round}: {bad}" if bad else None


def build_server_app(config: TrialConfig, on_done: Callable[[list[RoundStats]], None],
                     watcher: RoundWatcher | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, config, on_done, watcher)

    return app


def serve(grid: Grid, config: TrialConfig, on_done: Callable[[list[RoundStats]], None],
          watcher: RoundWatcher | None = None) -> None:
    """The body of every engine's ServerApp: the trial's strategy over `grid`."""
    torch.set_num_threads(compute_threads(config))
    lev = config.leverages
    strategy = accounted(str(lev["strategy"]), lev, config.scenario.num_clients,
                         build_codec(uplink_codec(lev)), build_codec(downlink_codec(lev)),
                         config.to_json(), config.scenario.client_eval,
                         watcher.round_started if watcher else None, config.seed)
    model = new_model(config)
    x_test, y_test = test_data(config)

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        started = time.process_time()
        load_arrays(model, arrays)
        loss, accuracy = evaluate(model, x_test, y_test)
        stats = strategy.rounds[server_round]
        stats.accuracy, stats.loss = accuracy, loss
        stats.server_cpu_s += time.process_time() - started
        stats.wall_s = time.perf_counter() - stats.started
        if watcher is not None:
            stats.node_j = watcher.round_ended(server_round)
        stats.stopped = divergence(stats) or (watcher.stop_reason(stats) if watcher else None)
        if stats.stopped:
            raise _StopFederation
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    with contextlib.suppress(_StopFederation):
        strategy.start(grid=grid, initial_arrays=model_to_arrays(model),
                       num_rounds=int(lev["rounds"]), evaluate_fn=evaluate_global)
    on_done([strategy.rounds[r] for r in sorted(strategy.rounds)])
