"""The codec interface and its compositions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
from flwr.app import Array, ArrayRecord

from sweeper.fl.arrays import array_values, to_array

if TYPE_CHECKING:
    from sweeper.fl.codecs import CodecSpec


class Codec(Protocol):
    name: str
    # what the codec drops a client keeps and adds to its next update (uplink only)
    error_feedback: bool
    lossless: bool  # decode(encode(x)) == x, bit for bit

    @classmethod
    def from_spec(cls, spec: CodecSpec, rng: np.random.Generator | None) -> Codec: ...

    def encode(self, record: ArrayRecord) -> ArrayRecord: ...

    def decode(self, record: ArrayRecord) -> ArrayRecord: ...


def is_float(array: Array) -> bool:
    return array.stype == "numpy.ndarray" and np.issubdtype(np.dtype(array.dtype), np.floating)


class Identity:
    name = "none"
    error_feedback = False
    lossless = True

    @classmethod
    def from_spec(cls, spec: CodecSpec, rng: np.random.Generator | None = None) -> Identity:
        return cls()

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        return record

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        return record


class Pipeline:
    """Stages applied in order on encode, in reverse on decode."""

    def __init__(self, stages: list[Codec]) -> None:
        self.stages = stages
        self.name = "+".join(s.name for s in stages)
        self.error_feedback = any(s.error_feedback for s in stages)
        self.lossless = all(s.lossless for s in stages)

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        for stage in self.stages:
            record = stage.encode(record)
        return record

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        for stage in reversed(self.stages):
            record = stage.decode(record)
        return record


class ElementwiseCodec:
    """A codec that maps each float array to one encoded array and back."""

    name = "elementwise"
    error_feedback = False
    lossless = False

    @classmethod
    def from_spec(cls, spec: CodecSpec, rng: np.random.Generator | None = None
                  ) -> ElementwiseCodec:
        return cls()

    def encode_array(self, a: np.ndarray) -> Array:
        raise NotImplementedError

    def decode_array(self, array: Array) -> np.ndarray:
        raise NotImplementedError

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        return _map(record, is_float, lambda arr: self.encode_array(array_values(arr)))

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        return _map(record, lambda arr: arr.stype.startswith("sweeper."),
                    lambda arr: to_array(self.decode_array(arr)))


def _map(record: ArrayRecord, selected: Callable[[Array], bool],
         fn: Callable[[Array], Array]) -> ArrayRecord:
    out = ArrayRecord()
    for key, arr in record.items():
        out[key] = fn(arr) if selected(arr) else arr
    return out


class SideArrayCodec:
    """A codec that turns each float array into a payload array plus one side array
    (scales, indices) stored under `key + suffix`."""

    name = "side-array"
    suffix = "::side"
    stype = "sweeper.side"
    error_feedback = False
    lossless = False

    def encode_array(self, a: np.ndarray) -> tuple[Array, Array]:
        raise NotImplementedError

    def decode_array(self, payload: Array, side: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            if is_float(arr):
                out[key], out[key + self.suffix] = self.encode_array(array_values(arr))
            else:
                out[key] = arr
        return out

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            if key.endswith(self.suffix):
                continue
            if arr.stype == self.stype:
                out[key] = to_array(self.decode_array(arr, array_values(record[key + self.suffix])))
            else:
                out[key] = arr
        return out
