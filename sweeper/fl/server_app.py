"""The ServerApp: FedAvg over the trial's clients, with centralized evaluation on the test
split after every round. The per-round accounting is handed to `on_done`."""

from __future__ import annotations

import time
from collections.abc import Callable

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from sweeper.config import TrialConfig
from sweeper.fl.codecs import get_codec
from sweeper.fl.strategy import AccountedFedAvg, RoundStats
from sweeper.fl.task import load_arrays, model_to_arrays, new_model, test_data
from sweeper.kws.train import evaluate


def build_server_app(config: TrialConfig,
                     on_done: Callable[[list[RoundStats]], None]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = AccountedFedAvg(get_codec(str(config.leverages["update_codec"])),
                                   config.to_json(),
                                   int(config.leverages["clients_per_round"]),
                                   config.scenario.num_clients)
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
            return MetricRecord({"accuracy": accuracy, "loss": loss})

        strategy.start(grid=grid, initial_arrays=model_to_arrays(model),
                       num_rounds=config.scenario.rounds, evaluate_fn=evaluate_global)
        on_done([strategy.rounds[r] for r in sorted(strategy.rounds)])

    return app
