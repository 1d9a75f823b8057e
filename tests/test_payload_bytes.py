"""The byte count every energy figure of communication rests on: exactly Flower's own
serialization (every nested object deflated, identical objects once)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message import array as flwr_array
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from sweeper.fl.task import payload_bytes


def flowers_count(obj) -> int:
    return sum(len(o.deflate()) for o in get_all_nested_objects(obj).values())


def _message(rng: np.random.Generator) -> Message:
    # a server-side message, as the simulation engine creates them (see engines/simulation.py)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    arrays = ArrayRecord({
        "conv.weight": Array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32)),
        "head.bias": Array(rng.normal(size=(13,)).astype(np.float32)),
        "zeros": Array(np.zeros(4000, dtype=np.float32)),  # repeated chunks: sent once
        "zeros.copy": Array(np.zeros(4000, dtype=np.float32)),  # a repeated array too
        "steps": Array(np.array([7], dtype=np.int64)),
    })
    content = RecordDict({"arrays": arrays,
                          "metrics": MetricRecord({"num-examples": 46, "loss": 0.5}),
                          "config": ConfigRecord({"trial-config": '{"seed": 0}'})})
    return Message(content, dst_node_id=1234567, message_type="train")


@pytest.mark.parametrize("chunk_bytes", [5 * 1024 * 1024, 1000])  # Flower's, and tiny chunks
def test_payload_bytes_is_flowers_serialized_size(monkeypatch, chunk_bytes: int) -> None:
    monkeypatch.setattr(flwr_array, "FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", chunk_bytes)
    message = _message(np.random.default_rng(0))
    expected = flowers_count(message)
    assert payload_bytes(message) == expected
    assert payload_bytes(message.content) == flowers_count(message.content)
    assert payload_bytes(message) == expected  # ids cached by the first count: same answer
    assert expected < 32_000  # the two 16 kB zero arrays (identical objects) counted once
