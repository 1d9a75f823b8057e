"""Encode+decode throughput of every codec on a 1-million-parameter update, and the
compression ratio of each codec on the real model's update.

    python benchmarks/codec_throughput.py [--repeats 5] [--write BENCHMARKS.md]

Throughput is MB of float32 update per second through encode then decode (best of
`--repeats`), single process, after one warm-up pass.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _markdown import publish
from flwr.app import Array, ArrayRecord

from sweeper.fl.codecs import LOSSLESS, UPLINK_CODECS, CodecSpec, build_codec
from sweeper.fl.task import payload_bytes
from sweeper.kws.models import build_model

SPECS = [CodecSpec(name, lossless=lossless) for lossless in LOSSLESS for name in UPLINK_CODECS]


def update_1m(rng: np.random.Generator) -> ArrayRecord:
    """1,000,000 float32 parameters shaped like a small CNN (conv kernels, a dense layer)."""
    record = ArrayRecord()
    record["conv1.weight"] = Array(rng.normal(0, 0.05, (64, 32, 3, 3)).astype(np.float32))
    record["conv2.weight"] = Array(rng.normal(0, 0.05, (128, 64, 3, 3)).astype(np.float32))
    remaining = 1_000_000 - 64 * 32 * 9 - 128 * 64 * 9
    record["fc.weight"] = Array(rng.normal(0, 0.01, (remaining,)).astype(np.float32))
    return record


def model_update(rng: np.random.Generator) -> ArrayRecord:
    """A realistic update of the real model: the difference after a few SGD-like steps."""
    model = build_model("cnn_small", 12)
    return ArrayRecord({k: torch.from_numpy(
        rng.normal(0, 1e-3, tuple(v.shape)).astype(np.float32) * (v.abs().mean().item() + 1e-3))
        for k, v in model.state_dict().items()})


def throughput(spec: CodecSpec, record: ArrayRecord, repeats: int) -> float:
    codec = build_codec(spec, np.random.default_rng(0))
    codec.decode(codec.encode(record))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        codec.decode(codec.encode(record))
        best = min(best, time.perf_counter() - started)
    mb = sum(arr.numpy().nbytes for arr in record.values()) / 1e6
    return mb / best


def label(spec: CodecSpec) -> str:
    return spec.name + ("" if spec.lossless == "none" else f"+{spec.lossless}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", type=Path, help="replace this section of the file")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    big, real = update_1m(rng), model_update(rng)
    base = payload_bytes(real)
    rows = []
    for spec in SPECS:
        spec = CodecSpec(spec.name, topk_ratio=0.01, lossless=spec.lossless)
        size = payload_bytes(build_codec(spec).encode(real))
        rows.append((label(spec), throughput(spec, big, args.repeats), size, base / size))
    n_params = sum(arr.numpy().size for arr in real.values())
    lines = [
        "## Codec throughput and compression",
        "",
        f"Command: `python benchmarks/codec_throughput.py --repeats {args.repeats}`. "
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{platform.processor() or 'cpu'}, Python {platform.python_version()}, "
        f"numpy {np.__version__}. topk ratio 0.01.",
        "",
        "Throughput: encode then decode of a 1,000,000-parameter float32 update (4 MB), "
        "best of the repeats. Payload: serialized Flower bytes of an update of the real "
        f"model `cnn_small` ({n_params:,} parameters; fp32 payload {base:,} B).",
        "",
        "| codec | encode+decode MB/s | payload of cnn_small update (B) | compression ratio |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {_mbps(name, mbps)} | {size:,} | {ratio:.2f}x |"
          for name, mbps, size, ratio in rows],
        "",
    ]
    text = "\n".join(lines)
    publish(text, args.write)


def _mbps(name: str, mbps: float) -> str:
    return "n/a (identity: no work)" if name == "none" else f"{mbps:,.0f}"


if __name__ == "__main__":
    main()
