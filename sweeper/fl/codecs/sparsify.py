"""Top-k sparsification: the largest-magnitude entries of each tensor and their indices."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array

from sweeper.fl.arrays import to_array
from sweeper.fl.codecs.base import SideArrayCodec

if TYPE_CHECKING:
    from sweeper.fl.codecs import CodecSpec

INDEX_SUFFIX = "::index"


class TopK(SideArrayCodec):
    name = "topk"
    suffix = INDEX_SUFFIX
    stype = "sweeper.topk"
    error_feedback = True

    @classmethod
    def from_spec(cls, spec: CodecSpec, rng: np.random.Generator | None = None) -> TopK:
        return cls(spec.topk_ratio)

    def __init__(self, ratio: float) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"topk ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio

    def encode_array(self, a: np.ndarray) -> tuple[Array, Array]:
        flat = a.astype(np.float32).reshape(-1)
        k = max(1, math.ceil(self.ratio * flat.size))
        index = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:])
        payload = Array(dtype="float32", shape=a.shape, stype=self.stype,
                        data=flat[index].tobytes())
        return payload, to_array(index.astype(np.int32))

    def decode_array(self, payload: Array, index: np.ndarray) -> np.ndarray:
        dense = np.zeros(int(np.prod(payload.shape)), np.float32)
        dense[index] = np.frombuffer(payload.data, np.float32)
        return dense.reshape(payload.shape)
