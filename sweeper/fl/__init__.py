"""Flower: ClientApp, ServerApp, the accounting strategy, update codecs and the engine.

Nothing here knows about Optuna, Ray Tune or MLflow.
"""

from __future__ import annotations

from sweeper.config import TrialConfig, engine_of
from sweeper.fl.strategy import RoundStats


def run_trial_federation(config: TrialConfig, watcher=None,
                         info: dict | None = None) -> list[RoundStats]:
    """Run the trial's federation on its engine; per-round accounting in round order.
    `watcher` (a `server_app.RoundWatcher`) is told when rounds start and end; what the
    engine has to say about the run as a whole (notes, its own byte counts) goes to `info`."""
    if engine_of(config) == "deployment":
        from sweeper.fl.deployment import run_federation as deploy

        return deploy(config, watcher, info if info is not None else {})

    from sweeper.fl.client_app import app as client_app
    from sweeper.fl.server_app import build_server_app
    from sweeper.fl.simulation import run_federation

    rounds: list[RoundStats] = []
    server_app = build_server_app(config, rounds.extend, watcher)
    run_federation(server_app, client_app, config.scenario.num_clients, config.seed)
    return rounds
