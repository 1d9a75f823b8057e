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
- framing, last: `tensor` sends each encoded array as a Flower Array of its own (Flower's
  default: each one its own objects and requests); `message` packs them all, bytes
  unchanged, into one Array (`framing.PackedFraming`). Exact.

A codec is a class with `name`, `encode`/`decode`, `from_spec(spec, rng)` and two
capabilities, `error_feedback` (the ClientApp keeps what it drops and re-sends it) and
`lossless`; it is added by its entry in `UPLINK_CODECS` (the `update_codec` and
`downlink_codec` leverages take their choices from these registries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeper.plugins import resolve

if TYPE_CHECKING:
    import numpy as np

    from sweeper.fl.codecs.base import Codec

# name -> "module:class"; the class builds itself from a `CodecSpec` (`from_spec`). Imported
# only when a trial asks for it: this package's face stays free of numpy and Flower.
UPLINK_CODECS: dict[str, str] = {
    "none": "sweeper.fl.codecs.base:Identity",
    "fp16": "sweeper.fl.codecs.quantize:Fp16",
    "bf16": "sweeper.fl.codecs.quantize:Bf16",
    "int8": "sweeper.fl.codecs.quantize:Int8",
    "int4": "sweeper.fl.codecs.quantize:Int4",
    "topk": "sweeper.fl.codecs.sparsify:TopK",
}
# topk needs error feedback (what it drops is re-sent by the client later); the server keeps
# no residual, so on the downlink its losses would be for good
DOWNLINK_CODECS: dict[str, str] = {name: ref for name, ref in UPLINK_CODECS.items()
                                   if name != "topk"}
LOSSLESS: dict[str, str] = {  # the lossless stage after the codec
    "none": "sweeper.fl.codecs.base:Identity",
    "zstd": "sweeper.fl.codecs.lossless:Zstd",
    "lz4": "sweeper.fl.codecs.lossless:Lz4",
}
FRAMINGS: dict[str, str] = {  # how the encoded arrays travel, after the lossless stage
    "tensor": "sweeper.fl.codecs.base:Identity",
    "message": "sweeper.fl.codecs.framing:PackedFraming",
}


@dataclass(frozen=True)
class CodecSpec:
    name: str = "none"
    granularity: str = "tensor"  # "tensor" | "channel" (int8/int4 scales)
    stochastic: bool = False  # stochastic rounding (int8/int4)
    topk_ratio: float = 0.01
    lossless: str = "none"
    framing: str = "tensor"


def build_codec(spec: CodecSpec, rng: np.random.Generator | None = None) -> Codec:
    """The codec of `spec`, followed by its lossless stage and its framing if it has them."""
    from sweeper.fl.codecs.base import Identity, Pipeline

    stages = [resolve(UPLINK_CODECS, spec.name, "codec").from_spec(spec, rng),
              resolve(LOSSLESS, spec.lossless, "lossless stage").from_spec(spec, rng),
              resolve(FRAMINGS, spec.framing, "framing").from_spec(spec, rng)]
    stages = [stage for stage in stages if not isinstance(stage, Identity)]
    if not stages:
        return Identity()
    return stages[0] if len(stages) == 1 else Pipeline(stages)


def __getattr__(name: str) -> Any:  # the `Codec` protocol, imported on first use
    if name == "Codec":
        from sweeper.fl.codecs.base import Codec

        return Codec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DOWNLINK_CODECS", "LOSSLESS", "UPLINK_CODECS", "Codec", "CodecSpec",
           "build_codec"]
