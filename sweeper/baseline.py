"""The centralized baseline: the trial's model trained on the pooled training data of all
clients, evaluated on the same test split. The ceiling every federated point is read against.

Its energy goes through a trial's ledger (same meters, profiles and counter choice): each
epoch is a round whose client compute is the training and whose server compute is the test
evaluation. Nothing is sent, so the ledger has no communication component at all.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from sweeper.config import TrialConfig
from sweeper.energy import EnergyLedger, PayloadBytesMeter, RoundUsage, client_window
from sweeper.fl.task import test_data
from sweeper.fl.warmup import warmup_examples
from sweeper.kws import (
    TrainSettings,
    client_partitions,
    compute_threads,
    evaluate,
    flops_per_example_of,
    model_info,
    new_model,
    trial_data,
)
from sweeper.result import MeterInfo
from sweeper.trial import MeterPlan, meter_plan, trial_ledger


@dataclass(frozen=True)
class EpochRecord:
    """One epoch, shaped like a trial's `RoundRecord` (without bytes: nothing is sent)."""

    epoch: int
    accuracy: float
    loss: float
    wall_s: float
    energy_j: float  # cumulative up to and including this epoch
    energy: dict[str, float]  # cumulative joules per component
    train_cpu_s: float
    eval_cpu_s: float


@dataclass
class BaselineResult:
    epochs: list[EpochRecord] = field(default_factory=list)
    accuracy: float = float("nan")
    energy_j: float = float("nan")
    wall_s: float = 0.0  # the epochs' time: not data loading, warm-up or idle probe
    examples: int = 0
    model: dict = field(default_factory=dict)
    meters: dict[str, MeterInfo] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy_by_epoch(self) -> list[float]:
        return [e.accuracy for e in self.epochs]

    @property
    def loss_by_epoch(self) -> list[float]:
        return [e.loss for e in self.epochs]

    @property
    def energy_j_by_epoch(self) -> list[float]:
        return [e.energy_j for e in self.epochs]


def run_baseline(config: TrialConfig, epochs: int) -> BaselineResult:
    """Train centrally for `epochs` with the trial's model, features, optimizer, lr and
    precision; test accuracy and cumulative energy after every epoch."""
    data = trial_data(config)
    pooled = sorted(i for part in client_partitions(config.scenario, config.seed) for i in part)
    x, y = data.x[pooled], data.y[pooled]
    x_test, y_test = test_data(config)
    settings = baseline_settings(config)
    model = new_model(config)
    train_flops = flops_per_example_of(config)[0] * len(y)  # as the ClientApp counts them
    result = BaselineResult(examples=len(y), model=model_info(config))
    threads = torch.get_num_threads()
    torch.set_num_threads(compute_threads(config))  # as a trial's clients
    try:
        warm_started = time.process_time()
        _warm_up(model, x, y, x_test, y_test, settings)
        warmup_cpu_s = time.process_time() - warm_started
        plan = meter_plan(config.scenario)
        ledger = _compute_ledger(config, plan)
        result.meters = ledger.provenance()
        result.info = {"meter_selection": plan.selection, "train_flops_per_epoch": train_flops,
                       "torch_threads": torch.get_num_threads(),
                       "warmup_cpu_s": warmup_cpu_s}
        started = time.perf_counter()
        for epoch in range(epochs):
            began = time.perf_counter()
            if plan.node is not None:
                plan.node.start()
            with client_window(config.scenario.meters, config.scenario.isolation) as window:
                cpu = time.process_time()
                settings.fit(model, x, y, seed=config.seed * 1_000_003 + epoch)
                train_cpu_s = time.process_time() - cpu
            cpu = time.process_time()
            loss, accuracy = evaluate(model, x_test, y_test)
            eval_cpu_s = time.process_time() - cpu
            node_j = plan.node.stop() if plan.node is not None else None
            wall_s = time.perf_counter() - began
            energy = ledger.add_round(RoundUsage(
                client_cpu_s=train_cpu_s, server_cpu_s=eval_cpu_s, bytes_up=0, bytes_down=0,
                client_flops=train_flops, node_j=node_j, wall_s=wall_s,
                client_window_j=window.joules if window is not None else 0.0))
            result.epochs.append(EpochRecord(epoch + 1, accuracy, loss, wall_s, ledger.total_j,
                                             energy, train_cpu_s, eval_cpu_s))
        result.wall_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    if result.epochs:
        result.accuracy, result.energy_j = result.epochs[-1].accuracy, ledger.total_j
    return result


def baseline_settings(config: TrialConfig) -> TrainSettings:
    """The trial's client training settings, one epoch at a time (the loop above counts the
    epochs) and without FedProx's proximal term: centrally there is no global model to
    anchor to."""
    return replace(TrainSettings.from_leverages(config.leverages), epochs=1, proximal_mu=0.0)


def _compute_ledger(config: TrialConfig, plan: MeterPlan) -> EnergyLedger:
    """A trial's ledger for this configuration and meter plan, without its communication
    meter: pricing 0 bytes would still show a "0 J communication" line, read as a fact."""
    return EnergyLedger([meter for meter in trial_ledger(config, plan).meters
                         if not isinstance(meter, PayloadBytesMeter)])


def _warm_up(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
             y_test: torch.Tensor, settings: TrainSettings) -> None:
    """The epoch's compute once, uncounted, so the first epoch does not pay the process's
    cold start (see `fl/warmup.py`): a copy of the model trains on a few batches, sized so
    the last batch has the shape of an epoch's last batch, then one test evaluation."""
    n = warmup_examples(len(y), settings.batch_size)
    settings.fit(copy.deepcopy(model), x[:n], y[:n], seed=0)
    evaluate(model, x_test, y_test)
