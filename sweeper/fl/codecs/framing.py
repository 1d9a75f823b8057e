"""Framing: how a message's arrays travel as Flower objects.

Flower sends every `Array` of a message as objects of their own (the array and its chunk),
each one request to the SuperLink or a SuperNode, and each with its own object header on
the wire. `PackedFraming` puts all of a record's arrays, bytes unchanged, into one Array
(an index of names, dtypes, shapes and sizes, then the arrays' bytes one after the other):
a message is then a handful of objects whatever the model's tensor count. Lossless, bit
for bit: `decode` gives back Arrays with the very bytes `encode` received.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord

PACKED_KEY = "packed"
PACKED_STYPE = "sweeper.packed"
_LENGTH = 4  # bytes of the index's length, little-endian, before the index


class PackedFraming:
    name = "packed"
    error_feedback = False
    lossless = True

    @classmethod
    def from_spec(cls, spec: object, rng: np.random.Generator | None = None
                  ) -> PackedFraming:
        return cls()

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        index, blobs = [], []
        for key, arr in record.items():
            data = arr.data
            index.append([key, arr.dtype, list(arr.shape), arr.stype, len(data)])
            blobs.append(data)
        head = json.dumps(index, separators=(",", ":")).encode()
        body = b"".join([len(head).to_bytes(_LENGTH, "little"), head, *blobs])
        return ArrayRecord({PACKED_KEY: Array(dtype="uint8", shape=(len(body),),
                                              stype=PACKED_STYPE, data=body)})

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        packed = record.get(PACKED_KEY)
        if packed is None or packed.stype != PACKED_STYPE:
            return record
        body = memoryview(packed.data)
        start = _LENGTH + int.from_bytes(body[:_LENGTH], "little")
        out = ArrayRecord()
        for key, dtype, shape, stype, size in json.loads(bytes(body[_LENGTH:start])):
            out[key] = Array(dtype=dtype, shape=tuple(shape), stype=stype,
                             data=bytes(body[start:start + size]))
            start += size
        return out
