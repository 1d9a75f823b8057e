"""Fast Array <-> numpy paths give exactly what Flower's own give."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from sweeper.fl.arrays import HeldArray, array_values, to_array

CASES = {
    "float32 matrix": np.arange(12, dtype=np.float32).reshape(3, 4),
    "float16": np.linspace(-1, 1, 7, dtype=np.float16),
    "bfloat16-sized int16": np.arange(-5, 5, dtype=np.int16),
    "int64 scalar": np.array(7, dtype=np.int64),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "bool": np.array([True, False, True]),
    "uint8 4-d": np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5),
    "fortran order": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
    "big endian": np.arange(4, dtype=">f4"),
    "wide shape": np.zeros((1, 1, 1, 1, 1, 1, 1, 2), dtype=np.float32),
    "strided view": np.arange(10.0)[::2],
}


@pytest.mark.parametrize("name", CASES)
def test_array_values_equals_flowers_numpy(name: str) -> None:
    array = Array(CASES[name])
    fast, flower = array_values(array), array.numpy()
    assert fast.dtype == flower.dtype and fast.shape == flower.shape
    assert np.array_equal(fast, flower)
    assert fast.flags.writeable
    fast[...] = 0  # a copy: the Array's bytes are untouched
    assert np.array_equal(array.numpy(), CASES[name])


@pytest.mark.parametrize("name", CASES)
def test_to_array_is_flowers_array(name: str) -> None:
    ours, flowers = to_array(CASES[name]), Array(CASES[name])
    assert (ours.dtype, ours.shape, ours.stype) == (flowers.dtype, flowers.shape, flowers.stype)
    assert ours.data == flowers.data and ours.object_id == flowers.object_id


def test_array_values_after_a_trip_through_flowers_serialization() -> None:
    record = ArrayRecord({"w": Array(np.arange(10, dtype=np.float32))})
    inflated = ArrayRecord.inflate(record.deflate(), dict(record.children.items()))
    assert np.array_equal(array_values(inflated["w"]), np.arange(10, dtype=np.float32))


def test_held_array_serializes_as_flower_and_hands_back_its_values() -> None:
    values = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    held, plain = HeldArray(values), Array(values)
    assert held.data == plain.data and held.object_id == plain.object_id
    assert held.numpy() is held.numpy() and np.array_equal(held.numpy(), values)
    assert not held.numpy().flags.writeable  # shared: no one may change it in place
    values[0, 0] = 99.0  # the caller's array stays its own
    assert held.numpy()[0, 0] != 99.0
    assert isinstance(Array.inflate(held.deflate(), dict(held.children.items())), Array)
    held.data = Array(np.ones(2, dtype=np.float32)).data  # new bytes: the held copy is gone
    held.shape, held.dtype = (2,), "float32"
    assert np.array_equal(held.numpy(), np.ones(2, dtype=np.float32))
