"""Glue between Flower records and the keyword-spotting task (model <-> ArrayRecord, data)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.app.message.arraychunk import ArrayChunk
from flwr.supercore.constant import HEAD_BODY_DIVIDER, HEAD_VALUE_DIVIDER
from flwr.supercore.inflatable.inflatable_object import (
    InflatableObject,
    no_object_id_recompute,
)

from sweeper.config import TrialConfig
from sweeper.fl.arrays import array_values, to_array
from sweeper.fl.codecs import CodecSpec
from sweeper.kws import client_split, trial_data

TRIAL_CONFIG_KEY = "trial-config"


def model_to_arrays(model: torch.nn.Module) -> ArrayRecord:
    return ArrayRecord(model.state_dict())


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The arrays of a record, deserialized once (Array.numpy() parses a header each call)."""
    return {key: array_values(arr) for key, arr in record.items()}


def load_numpy(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(a) for k, a in arrays.items()})


def numpy_difference(model: torch.nn.Module, base: dict[str, np.ndarray]) -> ArrayRecord:
    """The model's state minus `base` for float arrays (the client's update)."""
    out = ArrayRecord()
    for key, tensor in model.state_dict().items():
        a = tensor.detach().numpy()
        out[key] = to_array(a - base[key] if np.issubdtype(a.dtype, np.floating) else a.copy())
    return out


def load_arrays(model: torch.nn.Module, record: ArrayRecord) -> None:
    model.load_state_dict(record.to_torch_state_dict())


def uplink_codec(leverages: dict[str, Any]) -> CodecSpec:
    return CodecSpec(str(leverages["update_codec"]), str(leverages["quant_granularity"]),
                     bool(leverages["stochastic_rounding"]), float(leverages["topk_ratio"]),
                     str(leverages["lossless"]), str(leverages["framing"]))


def downlink_codec(leverages: dict[str, Any]) -> CodecSpec:
    return CodecSpec(str(leverages["downlink_codec"]), str(leverages["quant_granularity"]),
                     False, 1.0, str(leverages["lossless"]), str(leverages["framing"]))


def _combine(a: ArrayRecord, b: ArrayRecord, op) -> ArrayRecord:
    """op(a, b) for float arrays; other arrays taken from `a`."""
    out = ArrayRecord()
    for key, arr in a.items():
        x = array_values(arr)
        out[key] = to_array(op(x, array_values(b[key])).astype(x.dtype)
                         if np.issubdtype(x.dtype, np.floating) else x)
    return out


def difference(new: ArrayRecord, old: ArrayRecord) -> ArrayRecord:
    return _combine(new, old, np.subtract)


def add(base: ArrayRecord, update: ArrayRecord) -> ArrayRecord:
    return _combine(base, update, np.add)


def client_data(config: TrialConfig, partition_id: int,
                part: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """A client's local training data, or its held-out local evaluation data."""
    data = trial_data(config)
    train, held_out = client_split(config.scenario, config.seed, partition_id)
    index = torch.tensor(train if part == "train" else held_out, dtype=torch.long)
    return data.x[index], data.y[index]


def test_data(config: TrialConfig) -> tuple[torch.Tensor, torch.Tensor]:
    data = trial_data(config)
    index = data.indices("test")
    return data.x[index], data.y[index]


def payload_bytes(obj: InflatableObject) -> int:
    """Bytes of a Flower object as serialized for the wire: every nested object deflated,
    identical objects (same object id) once, as Flower's object store sends them.

    Same sum as deflating each of `get_all_nested_objects(obj)`, without its second
    deflate and SHA-256 of every array chunk: a parent's `children` already holds its
    children's ids (an Array's chunk ids are cached by Flower), and a chunk's deflated size
    is its header plus its data."""
    sizes: dict[str, int] = {}

    def walk(node: InflatableObject, object_id: str) -> None:
        for child_id, child in (node.children or {}).items():
            if child_id not in sizes:
                walk(child, child_id)
        sizes[object_id] = (_chunk_size(node) if isinstance(node, ArrayChunk)
                            else len(node.deflate()))

    with no_object_id_recompute():  # each object's id computed once in this count
        walk(obj, obj.object_id)
    return sum(sizes.values())


def _chunk_size(chunk: ArrayChunk) -> int:
    """len(chunk.deflate()) without copying the data (see `add_header_to_object_body`)."""
    size = len(chunk.data)
    head = f"{type(chunk).__qualname__}{HEAD_VALUE_DIVIDER}{HEAD_VALUE_DIVIDER}{size}"
    return len(head.encode()) + len(HEAD_BODY_DIVIDER) + size
