"""The dataset a scenario names, as cached features, plus its client partitions."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from sweeper.config import Scenario
from sweeper.errors import DataError
from sweeper.kws.features import FeatureConfig, KwsData, load_features
from sweeper.kws.partition import by_speaker, dirichlet, iid
from sweeper.kws.synth import CorpusSpec, ensure_corpus


def cache_root() -> Path:
    """Where corpora and features are cached: $SWEEPER_CACHE, else ~/.cache/sweeper."""
    return Path(os.environ.get("SWEEPER_CACHE", Path.home() / ".cache" / "sweeper"))


def dataset_root(scenario: Scenario,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    if scenario.dataset == "synthetic":
        spec = CorpusSpec(speakers=scenario.corpus_speakers, takes=scenario.corpus_takes,
                          seed=scenario.corpus_seed)
        return ensure_corpus(spec, cache_root(), progress)
    root = Path(scenario.data_dir or "")
    if not root.is_dir():
        raise DataError(f"scenario.data_dir: {root} is not a folder")
    return root


DEFAULT_FEATURES = FeatureConfig()


@cache
def load_data(scenario: Scenario, features: FeatureConfig = DEFAULT_FEATURES) -> KwsData:
    """Features of the scenario's dataset (generated and featurized once, then cached)."""
    return load_features(dataset_root(scenario), features, cache_root(), scenario.task)


@cache
def client_partitions(scenario: Scenario, seed: int) -> tuple[tuple[int, ...], ...]:
    """The training examples of each client (indices into the dataset), by the scenario's
    partition. Partitions do not depend on the features, only on labels and speakers."""
    data = load_data(scenario)
    train = data.indices("train").tolist()
    if scenario.partition == "speaker":
        parts = by_speaker(data.speakers, train, scenario.num_clients, seed)
    elif scenario.partition == "iid":
        parts = iid(train, scenario.num_clients, seed)
    else:
        parts = dirichlet(data.y.tolist(), train, scenario.num_clients,
                          scenario.dirichlet_alpha, seed)
    return tuple(tuple(p) for p in parts)


def partition_stats(scenario: Scenario, seed: int) -> list[dict]:
    """Per client: examples, speakers and label histogram (logged with the trial)."""
    data = load_data(scenario)
    stats = []
    for part in client_partitions(scenario, seed):
        labels = data.y[list(part)].tolist()
        stats.append({"examples": len(part),
                      "speakers": len({data.speakers[i] for i in part if data.speakers[i]}),
                      "labels": [labels.count(c) for c in range(len(data.classes))]})
    return stats


def client_split(scenario: Scenario, seed: int, partition_id: int,
                 eval_fraction: float = 0.1) -> tuple[list[int], list[int]]:
    """A client's own examples as (train, local evaluation): a seeded 10% held out."""
    part = list(client_partitions(scenario, seed)[partition_id])
    order = np.random.default_rng([seed, partition_id]).permutation(len(part))
    n_eval = int(len(part) * eval_fraction)
    return sorted(part[i] for i in order[n_eval:]), sorted(part[i] for i in order[:n_eval])
