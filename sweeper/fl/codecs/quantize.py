"""Quantizers: fp16, bf16 and symmetric int8/int4 (per tensor or per output channel)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array

from sweeper.fl.arrays import to_array
from sweeper.fl.codecs.base import ElementwiseCodec, SideArrayCodec

if TYPE_CHECKING:
    from sweeper.fl.codecs import CodecSpec

SCALE_SUFFIX = "::scale"


class Fp16(ElementwiseCodec):
    name = "fp16"

    def encode_array(self, a: np.ndarray) -> Array:
        return Array(dtype="float16", shape=a.shape, stype="sweeper.fp16",
                     data=a.astype(np.float16).tobytes())

    def decode_array(self, array: Array) -> np.ndarray:
        return np.frombuffer(array.data, np.float16).astype(np.float32).reshape(array.shape)


class Bf16(ElementwiseCodec):
    """bfloat16 as the top half of float32's bits, rounded to nearest even."""

    name = "bf16"

    def encode_array(self, a: np.ndarray) -> Array:
        bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        return Array(dtype="bfloat16", shape=a.shape, stype="sweeper.bf16",
                     data=rounded.tobytes())

    def decode_array(self, array: Array) -> np.ndarray:
        half = np.frombuffer(array.data, np.uint16).astype(np.uint32) << 16
        return half.view(np.float32).reshape(array.shape)


class IntQuantizer(SideArrayCodec):
    """Symmetric linear quantization to `bits` (8 or 4) with max-abs scales."""

    suffix = SCALE_SUFFIX

    def __init__(self, bits: int, granularity: str = "tensor", stochastic: bool = False,
                 rng: np.random.Generator | None = None) -> None:
        self.bits, self.granularity, self.stochastic = bits, granularity, stochastic
        self.levels = 2 ** (bits - 1) - 1
        self.rng = rng or np.random.default_rng(0)
        self.name = f"int{bits}"
        self.stype = f"sweeper.int{bits}"

    def _rows(self, a: np.ndarray) -> np.ndarray:
        if self.granularity == "channel" and a.ndim >= 2:
            return a.reshape(a.shape[0], -1)
        return a.reshape(1, -1)

    def encode_array(self, a: np.ndarray) -> tuple[Array, Array]:
        a = a.astype(np.float32)
        rows = self._rows(a)
        peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(rows.shape[0])
        scale = np.where(peak > 0, peak / self.levels, 1.0).astype(np.float32)
        q = rows / scale[:, None]
        q = np.floor(q + self.rng.random(q.shape)) if self.stochastic else np.rint(q)
        q = np.clip(q, -self.levels, self.levels).astype(np.int8).reshape(a.shape)
        return self._pack(q), to_array(scale)

    def decode_array(self, payload: Array, scale: np.ndarray) -> np.ndarray:
        rows = self._rows(self._unpack(payload).astype(np.float32)) * scale[:, None]
        return rows.reshape(payload.shape).astype(np.float32)

    def _pack(self, q: np.ndarray) -> Array:
        flat = q.reshape(-1)
        if self.bits == 8:
            data = flat.tobytes()
        else:  # two's-complement nibbles, two per byte
            nibbles = (flat & 0x0F).astype(np.uint8)
            if nibbles.size % 2:
                nibbles = np.append(nibbles, np.uint8(0))
            data = (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()
        return Array(dtype=f"int{self.bits}", shape=q.shape, stype=f"sweeper.int{self.bits}",
                     data=data)

    def _unpack(self, arr: Array) -> np.ndarray:
        n = int(np.prod(arr.shape))
        raw = np.frombuffer(arr.data, np.uint8)
        if self.bits == 8:
            return raw.view(np.int8)[:n].reshape(arr.shape)
        nibbles = np.empty(raw.size * 2, np.uint8)
        nibbles[0::2], nibbles[1::2] = raw & 0x0F, raw >> 4
        signed = nibbles[:n].astype(np.int8)
        signed[signed > 7] -= 16
        return signed.reshape(arr.shape)


class _FixedBits(IntQuantizer):
    """An `IntQuantizer` whose width is its class's `BITS` (what the registry names)."""

    BITS: int

    def __init__(self, granularity: str = "tensor", stochastic: bool = False,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(self.BITS, granularity, stochastic, rng)

    @classmethod
    def from_spec(cls, spec: CodecSpec, rng: np.random.Generator | None = None
                  ) -> _FixedBits:
        return cls(spec.granularity, spec.stochastic, rng)


class Int8(_FixedBits):
    BITS = 8


class Int4(_FixedBits):
    BITS = 4
