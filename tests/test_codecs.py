"""Update codecs: shape and dtype survive, error within the documented bound."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from sweeper.fl.client_app import encode_with_feedback
from sweeper.fl.codecs import FRAMINGS, LOSSLESS, UPLINK_CODECS, CodecSpec, build_codec
from sweeper.fl.task import payload_bytes


def _record(seed: int = 0) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    record = ArrayRecord()
    scales = np.array([0.001, 0.01, 0.1, 1.0])[:, None, None, None]  # channels differ
    record["conv.weight"] = Array((rng.normal(0, 1, (4, 3, 3, 3)) * scales).astype(np.float32))
    record["head.bias"] = Array(rng.normal(0, 1.0, (13,)).astype(np.float32))  # odd length
    record["zeros"] = Array(np.zeros((4,), dtype=np.float32))
    record["steps"] = Array(np.array([7], dtype=np.int64))
    return record


def _rows(a: np.ndarray, granularity: str) -> np.ndarray:
    return a.reshape(a.shape[0], -1) if granularity == "channel" and a.ndim >= 2 else \
        a.reshape(1, -1)


def _check_bound(name: str, spec: CodecSpec, a: np.ndarray, b: np.ndarray) -> None:
    if name == "none":
        assert np.array_equal(a, b)
    elif name == "fp16":
        assert np.allclose(a, b, rtol=2**-11, atol=6e-8)
    elif name == "bf16":
        assert np.allclose(a, b, rtol=2**-8, atol=0)
    elif name in ("int8", "int4"):
        levels = 127 if name == "int8" else 7
        rows_a, rows_b = _rows(a, spec.granularity), _rows(b, spec.granularity)
        scale = np.abs(rows_a).max(axis=1, keepdims=True) / levels
        bound = scale if spec.stochastic else scale / 2
        assert np.all(np.abs(rows_a - rows_b) <= bound * (1 + 1e-5) + 1e-12)
    elif name == "topk":
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        kept = flat_b != 0
        assert kept.sum() == max(1, int(np.ceil(spec.topk_ratio * flat_a.size))) or \
            not flat_a.any()
        assert np.array_equal(flat_a[kept], flat_b[kept])
        if (~kept).any() and kept.any():
            assert np.abs(flat_a[~kept]).max() <= np.abs(flat_a[kept]).min()


CASES = [CodecSpec(name, granularity, stochastic, 0.2, lossless, framing)
         for name, granularity, stochastic, lossless, framing in itertools.product(
             UPLINK_CODECS, ("tensor", "channel"), (False, True), LOSSLESS, FRAMINGS)
         if (name in ("int8", "int4") or (granularity, stochastic) == ("tensor", False))]


def _case_id(spec: CodecSpec) -> str:
    return (f"{spec.name}-{spec.granularity}-{'sr' if spec.stochastic else 'rn'}-"
            f"{spec.lossless}-{spec.framing}")


@pytest.mark.parametrize("spec", CASES, ids=_case_id)
def test_round_trip_keeps_shape_dtype_and_bound(spec: CodecSpec) -> None:
    original = _record()
    codec = build_codec(spec, np.random.default_rng(3))
    decoded = codec.decode(codec.encode(original))
    assert list(decoded.keys()) == list(original.keys())
    for key, arr in original.items():
        a, b = arr.numpy(), decoded[key].numpy()
        assert b.shape == a.shape and b.dtype == a.dtype, key
        if not np.issubdtype(a.dtype, np.floating):
            assert np.array_equal(a, b)
        else:
            _check_bound(spec.name, spec, a, b)


@pytest.mark.parametrize("spec", [s for s in CASES if s.framing == "message"], ids=_case_id)
def test_message_framing_hands_back_the_codecs_very_arrays(spec: CodecSpec) -> None:
    """Framing changes how the encoded arrays travel, never what they hold."""
    encoded = build_codec(replace(spec, framing="tensor"), np.random.default_rng(3)).encode(
        _record())
    framing = build_codec(CodecSpec(framing="message"))
    packed = framing.encode(encoded)
    assert list(packed.keys()) == ["packed"]
    unpacked = framing.decode(packed)
    assert list(unpacked.keys()) == list(encoded.keys())
    for key, arr in encoded.items():
        got = unpacked[key]
        assert (got.dtype, tuple(got.shape), got.stype, bytes(got.data)) == (
            arr.dtype, tuple(arr.shape), arr.stype, bytes(arr.data)), key


@pytest.mark.parametrize("tensors", [4, 56])
def test_message_framing_sends_one_array_whatever_the_tensor_count(tensors: int) -> None:
    rng = np.random.default_rng(tensors)
    record = ArrayRecord()
    for i in range(tensors):  # distinct values: Flower would not share their objects
        record[f"layer{i}"] = Array(rng.normal(size=(i + 3,)).astype(np.float32))
    packed = build_codec(CodecSpec(framing="message")).encode(record)

    def arrays_and_bytes(arrays: ArrayRecord) -> tuple[int, int]:
        content = RecordDict({"arrays": arrays})
        objects = get_all_nested_objects(content).values()
        return sum(isinstance(o, Array) for o in objects), payload_bytes(content)

    (framed_arrays, framed_bytes), (own_arrays, own_bytes) = map(arrays_and_bytes,
                                                                 (packed, record))
    assert (framed_arrays, own_arrays) == (1, tensors)
    data = sum(len(arr.data) for arr in record.values())
    assert data < framed_bytes < own_bytes  # every byte kept, per-object headers saved


def test_lossless_stage_is_exact_and_shrinks_redundant_data() -> None:
    record = ArrayRecord()
    record["w"] = Array(np.repeat(np.arange(64, dtype=np.float32), 64))
    for method in ("zstd", "lz4"):
        codec = build_codec(CodecSpec("none", lossless=method))
        encoded = codec.encode(record)
        assert np.array_equal(codec.decode(encoded)["w"].numpy(), record["w"].numpy())
        assert payload_bytes(encoded) < 0.5 * payload_bytes(record)


def test_stochastic_rounding_is_unbiased() -> None:
    record = ArrayRecord()
    values = np.full(20_001, 0.3, dtype=np.float32)
    values[0] = 1.0  # scale = 1/7, so 0.3 lies between levels 2/7 and 3/7
    record["w"] = Array(values)
    codec = build_codec(CodecSpec("int4", stochastic=True), np.random.default_rng(0))
    assert codec.decode(codec.encode(record))["w"].numpy()[1:].mean() == pytest.approx(
        0.3, abs=0.005)
    nearest = build_codec(CodecSpec("int4"))
    assert nearest.decode(nearest.encode(record))["w"].numpy()[1:].mean() == pytest.approx(
        2 / 7, rel=1e-5)


def test_compression_ratios() -> None:
    original = ArrayRecord()
    original["w"] = Array(np.random.default_rng(1).normal(size=(256, 256)).astype(np.float32))
    size = {name: payload_bytes(build_codec(CodecSpec(name, topk_ratio=0.01)).encode(original))
            for name in UPLINK_CODECS}
    assert size["fp16"] < 0.51 * size["none"] and size["bf16"] < 0.51 * size["none"]
    assert size["int8"] < 0.26 * size["none"]
    assert size["int4"] < 0.13 * size["none"]
    assert size["topk"] < 0.03 * size["none"]


def test_error_feedback_carries_the_residual_across_rounds() -> None:
    codec = build_codec(CodecSpec("topk", topk_ratio=0.1))
    state = RecordDict()
    rng = np.random.default_rng(0)
    updates, sent = [], []
    for _ in range(3):
        update = ArrayRecord()
        update["w"] = Array(rng.normal(size=(50,)).astype(np.float32))
        updates.append(update["w"].numpy())
        sent.append(codec.decode(encode_with_feedback(update, state, codec))["w"].numpy())
    residual = state["error-feedback-residual"]["w"].numpy()
    # Nothing is lost: what was sent plus what is still owed equals what was produced.
    assert np.allclose(sum(sent) + residual, sum(updates), atol=1e-5)
    # The second round sends entries owed from the first (not only its own largest).
    own_top = np.argsort(-np.abs(updates[1]))[:5]
    assert set(np.flatnonzero(sent[1])) != set(own_top)
