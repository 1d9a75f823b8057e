"""A trial's view of the speech task: its features, data and model, from its leverages."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from sweeper.config import TrialConfig
from sweeper.kws.dataset import load_data
from sweeper.kws.features import FeatureConfig, KwsData
from sweeper.kws.models import (
    build_model,
    flops_per_example,
    parameter_count,
    training_flops_per_example,
)


def feature_config(leverages: dict[str, Any]) -> FeatureConfig:
    return FeatureConfig(str(leverages["features"]), int(leverages["sample_rate"]),
                         int(leverages["n_mels"]), int(leverages["n_mfcc"]),
                         float(leverages["win_ms"]), float(leverages["hop_ms"]))


def trial_data(config: TrialConfig) -> KwsData:
    return load_data(config.scenario, feature_config(config.leverages))


def compute_threads(config: TrialConfig) -> int:
    """Torch intra-op threads a client (and the server) computes with, whatever runs it:
    `threads_per_client`, else the trial's CPUs. CPU time, hence modeled joules, depends on
    it: a deployment task left at the machine's core count spun idle threads on cores its
    neighbours were using, and was billed for it."""
    threads = config.leverages.get("threads_per_client")
    return int(threads) if threads is not None else max(1, config.scenario.cpus_per_trial)


def new_model(config: TrialConfig) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    return build_model(str(config.leverages["model"]), len(trial_data(config).classes),
                       float(config.leverages["width"]))


def model_info(config: TrialConfig) -> dict[str, Any]:
    """The trial's model: name, parameters and forward FLOPs per example."""
    model = new_model(config)
    shape = tuple(trial_data(config).x.shape[1:])
    return {"name": config.leverages["model"], "width": config.leverages["width"],
            "parameters": parameter_count(model),
            "flops_per_example": flops_per_example(model, shape), "input_shape": list(shape)}


@cache
def _model_cache(name: str, width: float, num_classes: int) -> torch.nn.Module:
    return build_model(name, num_classes, width)


def reusable_model(config: TrialConfig) -> torch.nn.Module:
    """The trial's architecture, built once per process and reused: for callers that load
    every parameter and buffer into it before use (its initial values are meaningless)."""
    return _model_cache(str(config.leverages["model"]), float(config.leverages["width"]),
                        len(trial_data(config).classes))


@cache
def _flops(name: str, width: float, num_classes: int,
           input_shape: tuple[int, ...]) -> tuple[int, int]:
    model = build_model(name, num_classes, width)
    return (training_flops_per_example(model, input_shape, num_classes),
            flops_per_example(model, input_shape))


def flops_per_example_of(config: TrialConfig) -> tuple[int, int]:
    """(training, inference) FLOPs per example of the trial's model, counted once."""
    data = trial_data(config)
    return _flops(str(config.leverages["model"]), float(config.leverages["width"]),
                  len(data.classes), tuple(data.x.shape[1:]))
