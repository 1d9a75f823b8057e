"""Warm a process before a trial's meters count its work, so no trial pays the cold start.

The first ClientApp call in a fresh process spent about 2 CPU-seconds more than the next
(torch's lazy kernel and oneDNN set-up, the feature cache read, the FLOP counter's imports):
billed to the first trial of every Ray worker, it made a configuration's energy depend on
where in the worker's life it ran, and under the deployment engine, where every message
gets a fresh `flwr-clientapp` process, it was most of every client's joules. `warm_client`
runs a client's compute path once on a few batches (data, FLOP count, selection, training,
evaluation, both codecs) and the ClientApp calls it before opening its counted window;
`warm_up` does it for every client of a simulated trial, and the server's evaluation, before
the federation starts (so round 1's wall time carries none of it either). Each runs once
per configuration (seed left out: repeats share it) and process.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache

from sweeper.config import TrialConfig
from sweeper.fl.codecs import build_codec
from sweeper.fl.task import (
    client_data,
    downlink_codec,
    model_to_arrays,
    numpy_difference,
    test_data,
    to_numpy,
    uplink_codec,
)
from sweeper.kws import (
    TrainSettings,
    evaluate,
    flops_per_example_of,
    new_model,
    reusable_model,
    select,
)

WARMUP_BATCHES = 3


def warmup_examples(count: int, batch_size: int) -> int:
    """How many of `count` examples a warm-up trains on: a few full batches, then one of
    the size an epoch's last batch has, so every batch shape the real work meets is seen."""
    return min(count, WARMUP_BATCHES * batch_size + count % batch_size)


def warm_up(config: TrialConfig) -> None:
    """Warm every client of a simulated trial and the server's evaluation, uncounted."""
    for partition_id in range(config.scenario.num_clients):
        warm_client(config, partition_id)
    warm_server(config)


def warm_client(config: TrialConfig, partition_id: int) -> None:
    """Run one client's compute path once in this process, uncounted."""
    _warm_client(_seedless(config), partition_id)


def warm_server(config: TrialConfig) -> None:
    """Run the server's evaluation once in this process, uncounted."""
    _warm_server(_seedless(config))


def _seedless(config: TrialConfig) -> str:
    data = config.to_dict()
    data["seed"] = 0
    return json.dumps(data, sort_keys=True)


@lru_cache(maxsize=256)
def _warm_client(config_json: str, partition_id: int) -> None:
    config = TrialConfig.from_json(config_json)
    lev = config.leverages
    x, y = client_data(config, partition_id)
    x_eval, y_eval = client_data(config, partition_id, part="eval")
    flops_per_example_of(config)
    model = reusable_model(config)  # every real call loads the global model into it first
    start = {key: value.detach().numpy().copy() for key, value in model.state_dict().items()}
    settings = replace(TrainSettings.from_leverages(lev), epochs=1)
    n = warmup_examples(len(y), settings.batch_size)
    if float(lev["data_fraction"]) < 1.0:
        select(model, x[:n], y[:n], float(lev["data_fraction"]), str(lev["summary"]), 0)
    settings.fit(model, x[:n], y[:n], seed=0)
    if len(y_eval):
        evaluate(model, x_eval, y_eval)
    uplink = build_codec(uplink_codec(lev))
    uplink.decode(uplink.encode(numpy_difference(model, start)))
    downlink = build_codec(downlink_codec(lev))
    to_numpy(downlink.decode(downlink.encode(model_to_arrays(model))))


@lru_cache(maxsize=64)
def _warm_server(config_json: str) -> None:
    config = TrialConfig.from_json(config_json)
    x, y = test_data(config)
    evaluate(new_model(config), x, y)  # at the server's batch shapes
