"""The ClientApp: local training with the trial's precision, update sent through its codec.

Everything a client needs arrives in the message (the trial's config travels in the
ConfigRecord), so the same app runs under the simulation engine and under SuperNodes.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from sweeper.config import TrialConfig
from sweeper.energy import client_window
from sweeper.fl.codecs import build_codec
from sweeper.fl.task import (
    TRIAL_CONFIG_KEY,
    add,
    client_data,
    difference,
    downlink_codec,
    load_numpy,
    numpy_difference,
    to_numpy,
    uplink_codec,
)
from sweeper.fl.warmup import warm_client
from sweeper.kws import (
    TrainSettings,
    compute_threads,
    evaluate,
    flops_per_example_of,
    reusable_model,
    select,
)

RESIDUAL_KEY = "error-feedback-residual"

app = ClientApp()


@lru_cache(maxsize=8)
def _parsed(text: str) -> TrialConfig:
    return TrialConfig.from_json(text)


def trial_config_of(msg: Message) -> TrialConfig:
    """The trial's config a server message carries, parsed once per trial (every message
    of a trial carries the same text; the config is never modified)."""
    return _parsed(str(msg.content["config"][TRIAL_CONFIG_KEY]))


def _received(msg: Message) -> tuple[TrialConfig, int, dict[str, np.ndarray], torch.nn.Module]:
    """The trial's config, the round, the decoded global model of a server message, and
    the trial's model loaded with it."""
    config_record = msg.content["config"]
    config = trial_config_of(msg)
    global_arrays = _decoded(msg.content["arrays"], config)
    model = reusable_model(config)
    load_numpy(model, global_arrays)
    return config, int(config_record["server-round"]), global_arrays, model


_last_decoded: list = [None, None]  # [the received ArrayRecord, its decoded arrays]


def _decoded(record: ArrayRecord, config: TrialConfig) -> dict[str, np.ndarray]:
    """The global model as numpy arrays. Under the simulation engine every client of a
    round receives the same record object: it is decoded once, not once per client. (The
    cache holds the record itself, so its id cannot be reused by another object.)"""
    if _last_decoded[0] is not record:
        codec = build_codec(downlink_codec(config.leverages))
        _last_decoded[:] = [record, to_numpy(codec.decode(record))]
    return _last_decoded[1]


def encode_with_feedback(update: ArrayRecord, state: RecordDict, codec) -> ArrayRecord:
    """Error feedback (Seide et al. 2014; Karimireddy et al. 2019): what the codec drops this
    round is kept in the client's state and added to its next update."""
    residual = state.get(RESIDUAL_KEY)
    corrected = add(update, residual) if residual is not None else update
    encoded = codec.encode(corrected)
    state[RESIDUAL_KEY] = difference(corrected, codec.decode(encoded))
    return encoded


def _windowed(work):
    """Run a ClientApp function inside a counter window (trials sharing a node, where the
    scenario's meters give a counter), after warming the process (`fl.warmup`); the
    attributed joules join its metrics."""

    def run(msg: Message, context: Context) -> Message:
        config = trial_config_of(msg)
        scenario = config.scenario
        torch.set_num_threads(compute_threads(config))
        warm_client(config, int(context.node_config["partition-id"]))  # before any count
        with client_window(scenario.meters, scenario.isolation) as window:
            reply = work(msg, context)
        if window is not None:
            reply.content["metrics"]["measured_j"] = window.joules
        return reply

    run.__name__ = work.__name__
    return run


@app.train()
@_windowed
def train_round(msg: Message, context: Context) -> Message:
    started = time.process_time()
    config, server_round, global_arrays, model = _received(msg)
    partition_id = int(context.node_config["partition-id"])
    lev = config.leverages
    settings = TrainSettings.from_leverages(lev)
    x, y = client_data(config, partition_id)
    seed = config.seed * 1_000_003 + server_round * 1009 + partition_id
    selecting = time.process_time()
    chosen_from = y
    if float(lev["data_fraction"]) < 1.0:
        chosen = select(model, x, y, float(lev["data_fraction"]), str(lev["summary"]), seed)
        x, y = x[chosen], y[chosen]
    selection_cpu_s = time.process_time() - selecting
    loss = settings.fit(model, x, y, seed=seed)
    spec = uplink_codec(lev)
    codec = build_codec(spec, np.random.default_rng(seed))
    update = numpy_difference(model, global_arrays)
    if codec.error_feedback:
        update = encode_with_feedback(update, context.state, codec)
    else:
        update = codec.encode(update)
    train_flops, forward_flops = flops_per_example_of(config)
    selected_from = len(chosen_from) if float(lev["data_fraction"]) < 1.0 else 0
    flops = (train_flops * len(y) * settings.epochs
             + forward_flops * selected_from * (lev["summary"] != "random"))
    metrics = MetricRecord({"num-examples": len(y), "train_loss": loss, "flops": flops,
                            "partition-id": partition_id, "selection_cpu_s": selection_cpu_s,
                            "torch_threads": torch.get_num_threads(),
                            "cpu_s": time.process_time() - started})
    return Message(RecordDict({"arrays": update, "metrics": metrics}), reply_to=msg)


@app.evaluate()
@_windowed
def evaluate_round(msg: Message, context: Context) -> Message:
    """The global model on the client's own held-out examples."""
    started = time.process_time()
    config, _, _, model = _received(msg)
    partition_id = int(context.node_config["partition-id"])
    x, y = client_data(config, partition_id, part="eval")
    loss, accuracy = evaluate(model, x, y) if len(y) else (float("nan"), float("nan"))
    metrics = MetricRecord({"num-examples": len(y), "loss": loss, "accuracy": accuracy,
                            "flops": flops_per_example_of(config)[1] * len(y),
                            "partition-id": partition_id,
                            "cpu_s": time.process_time() - started})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
