"""The trial's Flower apps: the ClientApp, the ServerApp, the accounting strategy, update
codecs and the glue between Flower records and the keyword-spotting task. What runs them as
a federation is in `sweeper.engines`.

Nothing here knows about Optuna, Ray or MLflow.

This file imports nothing on purpose (the apps import torch and Flower; the leverage
catalogue reads the registries without them). The package's face is these modules and
names; the rest of sweeper uses only them:

- `fl.client_app`: `app` (the ClientApp).
- `fl.server_app`: `build_server_app`, `serve`, `RoundWatcher`, `Watchers`, `divergence`.
- `fl.strategy`: `RoundStats` (one round's accounting), `accounted`.
- `fl.warmup`: `warm_up`, `warm_client`, `warm_server`, `warmup_examples`.
- `fl.task`: `test_data` (the centralized test split).
- `fl.codecs`: its `__all__` (the codec registries, `CodecSpec`, `build_codec`, `Codec`).
- `fl.registry`: `STRATEGIES`, the strategy names (no Flower import).
"""
