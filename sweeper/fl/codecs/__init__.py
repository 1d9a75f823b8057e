"""Update codecs: how model arrays are encoded for the wire, as pairs encode/decode over
Flower `ArrayRecord`s. A codec is a quantizer or sparsifier, optionally followed by a
lossless stage. Non-float arrays (counters) always travel unchanged.

- none: float32 as is. Exact.
- fp16: IEEE half. Relative error 2^-11 in the normal range; underflow below 6e-8.
- bf16: the top 16 bits of float32, rounded to nearest even. Relative error 2^-8.
- int8: symmetric, scale = max|x| / 127 per tensor or per output channel.
  Error <= scale / 2 (round to nearest), < scale (stochastic rounding, unbiased).
- int4: as int8 with 7 levels each side, two values per byte. Same bounds with its scale.
- topk: the ceil(ratio x n) largest magnitudes of each tensor and their int32 indices. Kept
  entries are exact, dropped ones are lost this round (error feedback re-sends them later).
- zstd / lz4 after any of them: lossless compression of every encoded array's bytes. Exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweeper.fl.codecs.base import Codec, Identity, Pipeline
from sweeper.fl.codecs.lossless import Lossless
from sweeper.fl.codecs.quantize import Bf16, Fp16, IntQuantizer
from sweeper.fl.codecs.sparsify import TopK

UPLINK_CODECS = ("none", "fp16", "bf16", "int8", "int4", "topk")
DOWNLINK_CODECS = ("none", "fp16", "bf16", "int8", "int4")
LOSSLESS = ("none", "zstd", "lz4")


@dataclass(frozen=True)
class CodecSpec:
    name: str = "none"
    granularity: str = "tensor"  # "tensor" | "channel" (int8/int4 scales)
    stochastic: bool = False  # stochastic rounding (int8/int4)
    topk_ratio: float = 0.01
    lossless: str = "none"


def build_codec(spec: CodecSpec, rng: np.random.Generator | None = None) -> Codec:
    stages: list[Codec] = []
    if spec.name == "fp16":
        stages.append(Fp16())
    elif spec.name == "bf16":
        stages.append(Bf16())
    elif spec.name in ("int8", "int4"):
        stages.append(IntQuantizer(8 if spec.name == "int8" else 4, spec.granularity,
                                   spec.stochastic, rng))
    elif spec.name == "topk":
        stages.append(TopK(spec.topk_ratio))
    elif spec.name != "none":
        raise ValueError(f"unknown codec {spec.name!r}")
    if spec.lossless != "none":
        stages.append(Lossless(spec.lossless))
    if not stages:
        return Identity()
    return stages[0] if len(stages) == 1 else Pipeline(stages)


__all__ = ["DOWNLINK_CODECS", "LOSSLESS", "UPLINK_CODECS", "Codec", "CodecSpec",
           "build_codec"]
