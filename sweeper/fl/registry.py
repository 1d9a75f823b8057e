"""The server strategies by name, readable without importing Flower (the leverage catalogue
takes its `strategy` choices from here; `fl.strategy.accounted` imports the one a trial
uses). A strategy is any `flwr.serverapp.strategy.Strategy` class taking Flower's
`fraction_train` / `min_*_nodes` arguments; its own options come from
`fl.strategy.strategy_options`."""

from __future__ import annotations

STRATEGIES: dict[str, str] = {  # name -> "module:class"
    "fedavg": "flwr.serverapp.strategy:FedAvg",
    "fedprox": "flwr.serverapp.strategy:FedProx",
    "fedadam": "flwr.serverapp.strategy:FedAdam",
    "fedyogi": "flwr.serverapp.strategy:FedYogi",
    "fedadagrad": "flwr.serverapp.strategy:FedAdagrad",
    "fedavgm": "flwr.serverapp.strategy:FedAvgM",
    "fedmedian": "flwr.serverapp.strategy:FedMedian",
}

__all__ = ["STRATEGIES"]
