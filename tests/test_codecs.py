"""Update codecs: shape and dtype survive, error within the documented bound."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from sweeper.fl.codecs import CODECS, get_codec


def _record(rng: np.random.Generator) -> ArrayRecord:
    record = ArrayRecord()
    record["conv.weight"] = Array(rng.normal(0, 0.05, (8, 1, 3, 3)).astype(np.float32))
    record["head.bias"] = Array(rng.normal(0, 1.0, (12,)).astype(np.float32))
    record["zeros"] = Array(np.zeros((4,), dtype=np.float32))
    record["steps"] = Array(np.array([7], dtype=np.int64))
    return record


@pytest.mark.parametrize("name", sorted(CODECS))
def test_round_trip_keeps_shape_dtype_and_bound(name: str) -> None:
    original = _record(np.random.default_rng(0))
    codec = get_codec(name)
    decoded = codec.decode(codec.encode(original))
    assert list(decoded.keys()) == list(original.keys())
    for key, arr in original.items():
        a, b = arr.numpy(), decoded[key].numpy()
        assert b.shape == a.shape and b.dtype == a.dtype, key
        if not np.issubdtype(a.dtype, np.floating) or name == "none":
            assert np.array_equal(a, b)
        elif name == "fp16":
            assert np.allclose(a, b, rtol=2**-11, atol=6e-8)
        elif name == "int8":
            bound = np.abs(a).max() / 127 / 2 if a.size else 0
            assert np.abs(a - b).max() <= bound + 1e-7, key


def test_int8_and_fp16_shrink_the_payload() -> None:
    from sweeper.fl.task import payload_bytes

    original = ArrayRecord()
    original["w"] = Array(np.random.default_rng(1).normal(size=(256, 256)).astype(np.float32))
    sizes = {name: payload_bytes(get_codec(name).encode(original)) for name in CODECS}
    assert sizes["fp16"] < 0.55 * sizes["none"]
    assert sizes["int8"] < 0.30 * sizes["none"]
