"""Flower `Array` <-> numpy, without numpy's per-array Python overhead where it is safe.

A small model's arrays are a few kB each, so `Array.numpy()` (npy header parsed by
`ast.literal_eval`) and `Array(ndarray)` (header written by `np.save`) cost more than the
data; at 32 clients they were most of the server's aggregation time and a third of a
client's Python time outside training. Same values and the
same serialized bytes as Flower's own path; anything unusual takes that path.
"""

from __future__ import annotations

import math
from functools import lru_cache
from io import BytesIO

import numpy as np
from flwr.app import Array
from numpy.lib import format as npy

NPY_V1_MAGIC = b"\x93NUMPY\x01\x00"
NUMPY_STYPE = "numpy.ndarray"


def array_values(array: Array) -> np.ndarray:
    """`array.numpy()`: a writable copy of its values. Reads a C-ordered npy v1.0 payload
    whose header states the Array's own dtype and shape directly; anything else goes to
    `Array.numpy()`."""
    if isinstance(array, HeldArray):
        return array.numpy().copy()
    data = array.data
    if array.stype != NUMPY_STYPE or bytes(data[:8]) != NPY_V1_MAGIC:
        return array.numpy()
    end = 10 + int.from_bytes(data[8:10], "little")
    dtype = np.dtype(array.dtype)
    shape = tuple(array.shape)
    expected = (f"{{'descr': '{dtype.str}', 'fortran_order': False, "
                f"'shape': {shape!r}, }}").encode()
    if dtype.hasobject or bytes(data[10:end]).rstrip() != expected:
        return array.numpy()
    count = math.prod(shape)
    return np.frombuffer(data, dtype, count=count, offset=end).reshape(shape).copy()


def to_array(values: np.ndarray) -> Array:
    """`Array(values)`: the same npy bytes as `np.save` writes, its header reused across
    arrays of one dtype and shape."""
    if values.dtype.hasobject or not values.flags.c_contiguous:
        return Array(values)
    return Array(dtype=str(values.dtype), shape=tuple(values.shape), stype=NUMPY_STYPE,
                 data=_npy_header(values.dtype, values.shape) + values.tobytes())


@lru_cache(maxsize=4096)
def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    out = BytesIO()
    header = {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    npy.write_array_header_1_0(out, header)
    return out.getvalue()


class HeldArray(Array):
    """An `Array` that keeps the ndarray it was made from: `numpy()` and `array_values`
    return it without parsing bytes, and its npy bytes (the same as Flower's) are written
    only when something reads `data`. For arrays built and read back in one process, e.g.
    the updates the server hands its strategy to average."""

    def __init__(self, ndarray: np.ndarray) -> None:
        held = np.array(ndarray, order="C", copy=True)
        held.flags.writeable = False  # numpy() hands out this one object
        self.__dict__.update(dtype=str(held.dtype), shape=tuple(held.shape),
                             stype=NUMPY_STYPE, _held=held)

    @property
    def data(self) -> bytes:
        if "_data" not in self.__dict__:
            self.__dict__["_data"] = to_array(self.__dict__["_held"]).data
        return self.__dict__["_data"]

    @data.setter
    def data(self, value: bytes) -> None:
        self.__dict__["_data"] = value

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("dtype", "shape", "stype", "data") and "_held" in self.__dict__:
            _ = self.data  # new contents: from now on, the bytes are the array
            del self.__dict__["_held"]
        super().__setattr__(name, value)

    def numpy(self) -> np.ndarray:
        held = self.__dict__.get("_held")
        return held if held is not None else super().numpy()


HeldArray.__qualname__ = Array.__qualname__  # Flower's object header names the class: an
# Array's bytes and object id, so it inflates as an Array wherever it is sent
