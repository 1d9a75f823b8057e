"""The dataset a scenario names, as cached features, plus its client partitions."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from sweeper.config import Scenario
from sweeper.errors import DataError
from sweeper.kws.features import FeatureConfig, KwsData, load_features
from sweeper.kws.partition import by_speaker
from sweeper.kws.synth import CorpusSpec, ensure_corpus


def cache_root() -> Path:
    """Where corpora and features are cached: $SWEEPER_CACHE, else ~/.cache/sweeper."""
    return Path(os.environ.get("SWEEPER_CACHE", Path.home() / ".cache" / "sweeper"))


def dataset_root(scenario: Scenario, progress=None) -> Path:
    if scenario.dataset == "synthetic":
        spec = CorpusSpec(speakers=scenario.corpus_speakers, takes=scenario.corpus_takes,
                          seed=scenario.corpus_seed)
        return ensure_corpus(spec, cache_root(), progress)
    root = Path(scenario.data_dir or "")
    if not root.is_dir():
        raise DataError(f"scenario.data_dir: {root} is not a folder")
    return root


@cache
def load_data(scenario: Scenario) -> KwsData:
    """Features of the scenario's dataset (generated and featurized once, then cached)."""
    return load_features(dataset_root(scenario), FeatureConfig(), cache_root())


@cache
def client_partitions(scenario: Scenario, seed: int) -> tuple[tuple[int, ...], ...]:
    data = load_data(scenario)
    train = data.indices("train").tolist()
    parts = by_speaker(data.speakers, train, scenario.num_clients, seed)
    return tuple(tuple(p) for p in parts)
