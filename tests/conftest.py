"""Shared fixtures: one real local Ray for the session, a tiny synthetic corpus, tiny spaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import yaml

TINY_SCENARIO = {
    "dataset": "synthetic",
    "corpus_speakers": 8,
    "corpus_takes": 2,
    "num_clients": 2,
    "partition": "speaker",
    "rounds": 2,
    "engine": "simulation",
    "cpus_per_trial": 1,
    "seed": 0,
}


@pytest.fixture(scope="session", autouse=True)
def sweeper_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Corpus and feature caches live in one session folder (set before Ray starts, so its
    workers inherit it)."""
    cache = tmp_path_factory.mktemp("sweeper-cache")
    os.environ["SWEEPER_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def ray_cluster(sweeper_cache: Path):
    """A real local Ray (Ray 2.55 has no local_mode): two CPUs, no dashboard."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_space(path: Path, **overrides) -> Path:
    """A tiny valid space; keyword arguments replace top-level sections."""
    space = {
        "name": "tiny",
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "energy_j", "direction": "minimize"}],
        "budget": {"trials": 4, "parallel": 2},
        "sampler": {"name": "random", "seed": 1},
        "scenario": dict(TINY_SCENARIO),
        "leverages": {
            "precision": {"choices": ["fp32", "bf16"]},
            "update_codec": {"choices": ["none", "fp16", "int8"]},
            "local_epochs": {"low": 1, "high": 2},
            "lr": {"low": 0.01, "high": 0.1, "log": True},
        },
    }
    space.update(overrides)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path
