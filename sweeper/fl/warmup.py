"""Warm the trial's process before its meters start, so no trial pays the cold start.

The first ClientApp call in a fresh process spends about 2 CPU-seconds more than the next
(torch's lazy kernel and oneDNN set-up, the feature cache read, the FLOP counter's imports,
Flower's message machinery): billed to the first trial of every Ray worker, it made a
configuration's energy depend on where in the worker's life it ran. `warm_up` calls the
trial's own ClientApp (train, then evaluate) once on a few batches of partition 0, through
a real Flower message carrying the trial's config, outside any counted window, and the
server's evaluation on a few test examples. It runs once per distinct configuration and
process (repeats of a configuration share it).
"""

from __future__ import annotations

import json
from functools import lru_cache

from flwr.app import ConfigRecord, RecordDict

from sweeper.config import TrialConfig
from sweeper.errors import SweeperError
from sweeper.fl.codecs import build_codec
from sweeper.fl.task import TRIAL_CONFIG_KEY, downlink_codec, model_to_arrays, test_data
from sweeper.kws.task import new_model
from sweeper.kws.train import evaluate

# node_config key that caps a ClientApp's examples (set only by the warm-up)
WARMUP_EXAMPLES_KEY = "sweeper-warmup-examples"
WARMUP_BATCHES = 3


def warm_up(config: TrialConfig) -> None:
    """Run the trial's compute path once, uncounted (a no-op after the first time for the
    same configuration in this process)."""
    data = config.to_dict()
    data["seed"] = 0  # repeats differ only by seed: one warm-up serves them all
    _warm_up(json.dumps(data, sort_keys=True))


@lru_cache(maxsize=64)
def _warm_up(config_json: str) -> None:
    from sweeper.fl.client_app import app as client_app
    from sweeper.fl.simulation import call_client_app

    config = TrialConfig.from_json(config_json)
    examples = WARMUP_BATCHES * int(config.leverages["batch_size"])
    model = new_model(config)
    arrays = build_codec(downlink_codec(config.leverages)).encode(model_to_arrays(model))
    for message_type in ("train", "evaluate"):
        settings = ConfigRecord({TRIAL_CONFIG_KEY: config.to_json(), "server-round": 1})
        reply = call_client_app(client_app, RecordDict({"arrays": arrays, "config": settings}),
                                message_type, {"partition-id": 0, WARMUP_EXAMPLES_KEY: examples})
        if reply.has_error():
            raise SweeperError(f"warm-up of the ClientApp failed: {reply.error.reason}")
    x, y = test_data(config)
    evaluate(model, x, y)  # the server's evaluation, at its batch shapes
