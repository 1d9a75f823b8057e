"""Glue between Flower records and the keyword-spotting task (model <-> ArrayRecord, data)."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from sweeper.config import TrialConfig
from sweeper.kws.dataset import client_partitions, load_data
from sweeper.kws.models import build_model

TRIAL_CONFIG_KEY = "trial-config"


def new_model(config: TrialConfig) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    return build_model(config.scenario.model, len(load_data(config.scenario).classes))


def model_to_arrays(model: torch.nn.Module) -> ArrayRecord:
    return ArrayRecord(model.state_dict())


def load_arrays(model: torch.nn.Module, record: ArrayRecord) -> None:
    model.load_state_dict(record.to_torch_state_dict())


def difference(new: ArrayRecord, old: ArrayRecord) -> ArrayRecord:
    """new - old for float arrays; other arrays as in `new`."""
    out = ArrayRecord()
    for key, arr in new.items():
        a = arr.numpy()
        out[key] = Array(a - old[key].numpy() if np.issubdtype(a.dtype, np.floating) else a)
    return out


def apply_update(base: ArrayRecord, update: ArrayRecord) -> ArrayRecord:
    """base + update for float arrays; other arrays taken from `update`."""
    out = ArrayRecord()
    for key, arr in update.items():
        u = arr.numpy()
        b = base[key].numpy()
        out[key] = Array((b + u).astype(b.dtype) if np.issubdtype(b.dtype, np.floating) else u)
    return out


def client_data(config: TrialConfig, partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_data(config.scenario)
    index = torch.tensor(client_partitions(config.scenario, config.seed)[partition_id])
    return data.x[index], data.y[index]


def test_data(config: TrialConfig) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_data(config.scenario)
    index = data.indices("test")
    return data.x[index], data.y[index]


def payload_bytes(obj) -> int:
    """Bytes of a Flower object as serialized for the wire (every nested object deflated)."""
    return sum(len(o.deflate()) for o in get_all_nested_objects(obj).values())
