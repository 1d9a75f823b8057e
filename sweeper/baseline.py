"""The centralized baseline: the trial's model trained on the pooled training data of all
clients, evaluated on the same test split. The ceiling every federated point is read against."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sweeper.config import TrialConfig
from sweeper.kws.dataset import client_partitions
from sweeper.kws.task import model_info, new_model, trial_data
from sweeper.kws.train import evaluate, train


@dataclass
class BaselineResult:
    accuracy_by_epoch: list[float] = field(default_factory=list)
    loss_by_epoch: list[float] = field(default_factory=list)
    accuracy: float = float("nan")
    wall_s: float = 0.0
    examples: int = 0
    model: dict = field(default_factory=dict)


def run_baseline(config: TrialConfig, epochs: int) -> BaselineResult:
    """Train centrally for `epochs` with the trial's model, features, optimizer, lr and
    precision; test accuracy after every epoch."""
    started = time.perf_counter()
    data = trial_data(config)
    pooled = sorted(i for part in client_partitions(config.scenario, config.seed) for i in part)
    test = data.indices("test")
    lev = config.leverages
    model = new_model(config)
    result = BaselineResult(examples=len(pooled), model=model_info(config))
    for epoch in range(epochs):
        train(model, data.x[pooled], data.y[pooled], epochs=1, batch_size=int(lev["batch_size"]),
              lr=float(lev["lr"]), precision=str(lev["precision"]),
              seed=config.seed * 1_000_003 + epoch, optimizer=str(lev["optimizer"]))
        loss, accuracy = evaluate(model, data.x[test], data.y[test])
        result.accuracy_by_epoch.append(accuracy)
        result.loss_by_epoch.append(loss)
    result.accuracy = result.accuracy_by_epoch[-1] if epochs else float("nan")
    result.wall_s = time.perf_counter() - started
    return result
