"""Lossless compression (zstd, lz4) of every array's serialized bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwr.app import Array, ArrayRecord

if TYPE_CHECKING:
    import numpy as np

    from sweeper.fl.codecs import CodecSpec


class Lossless:
    error_feedback = False
    lossless = True

    def __init__(self, method: str) -> None:
        if method == "zstd":
            import zstandard

            self._compress = zstandard.ZstdCompressor(level=3).compress
            self._decompress = zstandard.ZstdDecompressor().decompress
        elif method == "lz4":
            import lz4.frame

            self._compress, self._decompress = lz4.frame.compress, lz4.frame.decompress
        else:
            raise ValueError(f"unknown lossless method {method!r}")
        self.name = method
        self.suffix = f"+{method}"

    def encode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            out[key] = Array(dtype=arr.dtype, shape=arr.shape, stype=arr.stype + self.suffix,
                             data=self._compress(arr.data))
        return out

    def decode(self, record: ArrayRecord) -> ArrayRecord:
        out = ArrayRecord()
        for key, arr in record.items():
            if arr.stype.endswith(self.suffix):
                arr = Array(dtype=arr.dtype, shape=arr.shape,
                            stype=arr.stype[: -len(self.suffix)],
                            data=self._decompress(arr.data))
            out[key] = arr
        return out


class _Named(Lossless):
    """A `Lossless` stage whose method is its class's `METHOD` (what the registry names)."""

    METHOD: str

    def __init__(self) -> None:
        super().__init__(self.METHOD)

    @classmethod
    def from_spec(cls, spec: CodecSpec, rng: np.random.Generator | None = None) -> _Named:
        return cls()


class Zstd(_Named):
    METHOD = "zstd"


class Lz4(_Named):
    METHOD = "lz4"
