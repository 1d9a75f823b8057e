"""Top-k sparsification: the largest-magnitude entries of each tensor and their indices."""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord

from sweeper.fl.codecs.base import is_float

INDEX_SUFFIX = "::index"


class TopK:
    name = "topk"

    def __init__(self, ratio: float) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"topk ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            if not is_float(arr):
                out[key] = arr
                continue
            flat = arr.numpy().astype(np.float32).reshape(-1)
            k = max(1, math.ceil(self.ratio * flat.size))
            index = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:])
            out[key] = Array(dtype="float32", shape=arr.shape, stype="sweeper.topk",
                             data=flat[index].tobytes())
            out[key + INDEX_SUFFIX] = Array(index.astype(np.int32))
        return out

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            if key.endswith(INDEX_SUFFIX):
                continue
            if arr.stype != "sweeper.topk":
                out[key] = arr
                continue
            dense = np.zeros(int(np.prod(arr.shape)), np.float32)
            dense[record[key + INDEX_SUFFIX].numpy()] = np.frombuffer(arr.data, np.float32)
            out[key] = Array(dense.reshape(arr.shape))
        return out
