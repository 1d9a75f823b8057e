"""Update codecs: how a model update is encoded for the wire, as a pair encode/decode over
Flower `ArrayRecord`s. Non-float arrays (e.g. counters) always travel unchanged.

| codec | encoding | error bound (per element) |
|---|---|---|
| none | float32 as is | exact |
| fp16 | IEEE half | relative 2^-11 (normal range) |
| int8 | symmetric per-tensor, scale = max|x| / 127, round to nearest | scale / 2 |
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from flwr.app import Array, ArrayRecord

SCALE_SUFFIX = "::scale"


class Codec(Protocol):
    name: str

    def encode(self, record: ArrayRecord) -> ArrayRecord: ...

    def decode(self, record: ArrayRecord) -> ArrayRecord: ...


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


class Identity:
    name = "none"

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        return record

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        return record


class Fp16:
    name = "fp16"

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            a = arr.numpy()
            out[key] = Array(a.astype(np.float16) if _is_float(a) else a)
        return out

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            a = arr.numpy()
            out[key] = Array(a.astype(np.float32) if a.dtype == np.float16 else a)
        return out


class Int8:
    name = "int8"

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            a = arr.numpy()
            if not _is_float(a):
                out[key] = Array(a)
                continue
            peak = float(np.abs(a).max()) if a.size else 0.0
            scale = peak / 127.0 if peak > 0 else 1.0
            out[key] = Array(np.clip(np.rint(a / scale), -127, 127).astype(np.int8))
            out[key + SCALE_SUFFIX] = Array(np.array([scale], dtype=np.float32))
        return out

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            if key.endswith(SCALE_SUFFIX):
                continue
            a = arr.numpy()
            scale_key = key + SCALE_SUFFIX
            if a.dtype == np.int8 and scale_key in record:
                scale = record[scale_key].numpy()[0]
                a = a.astype(np.float32) * scale
            out[key] = Array(a)
        return out


CODECS: dict[str, type] = {"none": Identity, "fp16": Fp16, "int8": Int8}


def get_codec(name: str) -> Codec:
    return CODECS[name]()
