"""Flower's own strategies, wrapped to carry the trial's codecs and to account every round.

`accounted(name, ...)` builds e.g. an `AccountedFedProx`: the strategy class from
`flwr.serverapp.strategy` with `AccountingMixin` in front of it in the MRO. The mixin
encodes the global model for the downlink, decodes client updates before the strategy
aggregates them (the strategy only ever sees full float32 models), and records per round the
serialized payload bytes of every message in each direction and per client, the CPU time
clients report, the server's own CPU time and the round's wall time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import no_object_id_recompute

from sweeper.fl.arrays import HeldArray, array_values, to_array
from sweeper.fl.codecs import Codec
from sweeper.fl.registry import STRATEGIES
from sweeper.fl.task import TRIAL_CONFIG_KEY, payload_bytes, to_numpy
from sweeper.plugins import resolve


@dataclass
class RoundStats:
    round: int
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_by_client: dict[int, list[int]] = field(default_factory=dict)  # node: [up, down]
    client_of_node: dict[int, int] = field(default_factory=dict)  # node id -> partition id
    client_cpu_s: float = 0.0
    client_flops: float = 0.0  # training + evaluation (+ selection) FLOPs, all clients
    cpu_s_by_client: dict[int, float] = field(default_factory=dict)  # node: CPU seconds
    node_j: dict[str, float] | None = None  # node meter's joules per zone, if one ran
    client_window_j: float = 0.0  # counter windows around the clients' work, attributed
    examples_by_client: dict[int, int] = field(default_factory=dict)  # node: trained on
    selection_cpu_s: float = 0.0  # part of client_cpu_s spent choosing examples
    torch_threads: int = 0
    server_cpu_s: float = 0.0
    clients_ok: int = 0
    clients_failed: int = 0
    errors: list[str] = field(default_factory=list)  # reasons of failed clients
    train_loss: float = float("nan")
    client_accuracy: float = float("nan")  # clients' held-out data, weighted mean
    accuracy: float = float("nan")  # centralized test set
    loss: float = float("nan")
    wall_s: float = 0.0
    started: float = 0.0
    stopped: str | None = None  # why the federation ended after this round, if it did
    # partition: [up, down bytes, up, down packets] on the client's link (deployment engine
    # in network namespaces); empty where not measured
    wire_by_client: dict[int, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundStats:
        """The inverse of `to_dict` after a JSON round trip (node ids back to ints)."""
        data = dict(data)
        for key in _INT_KEYED:
            data[key] = {int(node): value for node, value in data[key].items()}
        return cls(**data)

    def count(self, node: int, up: int = 0, down: int = 0) -> None:
        self.bytes_up += up
        self.bytes_down += down
        per = self.bytes_by_client.setdefault(node, [0, 0])
        per[0] += up
        per[1] += down


_INT_KEYED = ("bytes_by_client", "client_of_node", "cpu_s_by_client", "examples_by_client",
              "wire_by_client")


class AccountingMixin:
    """Put in front of a Flower strategy class (see `accounted`)."""

    def setup_accounting(self, uplink: Codec, downlink: Codec, trial_config_json: str,
                         on_round_start: Callable[[int], None] | None = None,
                         seed: int = 0) -> None:
        self.uplink, self.downlink = uplink, downlink
        self.seed = seed
        self.on_round_start = on_round_start
        self.trial_config_json = trial_config_json
        self.rounds: dict[int, RoundStats] = {}
        self._global: ArrayRecord | None = None

    def _stats(self, server_round: int) -> RoundStats:
        if server_round not in self.rounds:
            if self.on_round_start is not None:
                self.on_round_start(server_round)
            self.rounds[server_round] = RoundStats(server_round, started=time.perf_counter())
        return self.rounds[server_round]

    def _outgoing(self, server_round: int, messages: Iterable[Message],
                  arrays: ArrayRecord) -> list[Message]:
        messages = list(messages)
        encoded = self.downlink.encode(arrays)
        stats = self._stats(server_round)
        content_bytes: dict[int, int] = {}  # the strategy sends one shared RecordDict to all
        with no_object_id_recompute():  # nor is its object id recomputed for each message
            for msg in messages:
                msg.content["arrays"] = encoded
                key = id(msg.content)
                if key not in content_bytes:
                    content_bytes[key] = payload_bytes(msg.content)
                stats.count(msg.metadata.dst_node_id,
                            down=content_bytes[key] + len(msg.deflate()))
        return messages

    def _incoming(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        stats = self._stats(server_round)
        replies = sorted(replies, key=_client_order)
        for msg in replies:
            stats.count(msg.metadata.src_node_id, up=payload_bytes(msg))
            if msg.has_error():
                stats.clients_failed += 1
                stats.errors.append(msg.error.reason)
                continue
            metrics = msg.content["metrics"]
            stats.client_cpu_s += float(metrics["cpu_s"])
            node = msg.metadata.src_node_id
            stats.cpu_s_by_client[node] = stats.cpu_s_by_client.get(node, 0.0) + float(
                metrics["cpu_s"])
            stats.client_flops += float(metrics["flops"])
            stats.client_window_j += float(metrics.get("measured_j", 0.0))
            stats.client_of_node[msg.metadata.src_node_id] = int(metrics["partition-id"])
        return replies

    def _seed_sampling(self, server_round: int, phase: int) -> None:
        """Flower's strategies sample clients with the module-level `random`, which Flower's
        own networking also draws from (retry jitter) under the deployment engine: seeded
        anew for each round and phase, a trial samples the same clients under every engine
        (with nodes listed in partition order, as both engines list them)."""
        random.seed(self.seed * 1_000_003 + 2 * server_round + phase)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._stats(server_round)
        self._seed_sampling(server_round, 0)
        config[TRIAL_CONFIG_KEY] = self.trial_config_json
        self._global = arrays
        return self._outgoing(server_round,
                              super().configure_train(server_round, arrays, config, grid), arrays)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = self._incoming(server_round, replies)
        started = time.process_time()
        stats = self.rounds[server_round]
        base = to_numpy(self._global)
        for msg in replies:
            if not msg.has_error():
                stats.clients_ok += 1
                metrics = msg.content["metrics"]
                stats.examples_by_client[msg.metadata.src_node_id] = int(metrics["num-examples"])
                stats.selection_cpu_s += float(metrics["selection_cpu_s"])
                stats.torch_threads = int(metrics["torch_threads"])
                decoded = to_numpy(self.uplink.decode(msg.content["arrays"]))
                model = ArrayRecord()  # item by item: ArrayRecord(dict) copies each Array
                for k, d in decoded.items():  # read back by the strategy only
                    model[k] = HeldArray(base[k] + d if np.issubdtype(d.dtype, np.floating)
                                         else d)
                msg.content["arrays"] = model
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:  # FedOpt's moments are float64: keep the model's own dtypes
            arrays = _like(arrays, self._global)
        if metrics is not None:
            stats.train_loss = float(metrics["train_loss"])
        stats.server_cpu_s += time.process_time() - started
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        config[TRIAL_CONFIG_KEY] = self.trial_config_json
        self._seed_sampling(server_round, 1)
        return self._outgoing(
            server_round, super().configure_evaluate(server_round, arrays, config, grid), arrays)

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        metrics = super().aggregate_evaluate(server_round, self._incoming(server_round, replies))
        if metrics is not None:
            self.rounds[server_round].client_accuracy = float(metrics["accuracy"])
        return metrics


def strategy_options(name: str, leverages: dict[str, Any]) -> dict[str, Any]:
    """The strategy's own hyper-parameters from the leverages (None: Flower's default)."""
    if name == "fedprox":
        return {"proximal_mu": float(leverages["proximal_mu"])}
    if name == "fedavgm":
        options = {"server_momentum": float(leverages["server_momentum"])}
        if leverages["server_lr"] is not None:
            options["server_learning_rate"] = float(leverages["server_lr"])
        return options
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        keys = {"server_lr": "eta", "tau": "tau"}
        if name != "fedadagrad":
            keys.update(beta_1="beta_1", beta_2="beta_2")
        return {flwr_key: float(leverages[ours]) for ours, flwr_key in keys.items()
                if leverages[ours] is not None}
    return {}


def accounted(name: str, leverages: dict[str, Any], num_clients: int, uplink: Codec,
              downlink: Codec, trial_config_json: str, client_eval: bool = True,
              on_round_start: Callable[[int], None] | None = None,
              seed: int = 0) -> AccountingMixin:
    base = resolve(STRATEGIES, name, "strategy")
    cls = type(f"Accounted{base.__name__}", (AccountingMixin, base), {})
    per_round = int(leverages["clients_per_round"])
    evaluators = per_round if client_eval else 0
    strategy = cls(fraction_train=per_round / num_clients,
                   fraction_evaluate=evaluators / num_clients,
                   min_train_nodes=per_round, min_evaluate_nodes=evaluators,
                   min_available_nodes=num_clients, **strategy_options(name, leverages))
    strategy.setup_accounting(uplink, downlink, trial_config_json, on_round_start, seed)
    return strategy


def _client_order(reply: Message) -> tuple[int, int]:
    """Replies in partition order (errors last): they arrive in whatever order the engine
    delivers them, and the strategies' float sums depend on the order, so a trial would
    not reproduce to the last bit without it."""
    if reply.has_error():
        return (1, reply.metadata.src_node_id)
    return (0, int(reply.content["metrics"]["partition-id"]))


def _like(arrays: ArrayRecord, reference: ArrayRecord) -> ArrayRecord:
    out = ArrayRecord()
    for key, arr in arrays.items():
        dtype = reference[key].dtype
        out[key] = arr if arr.dtype == dtype else to_array(array_values(arr).astype(dtype))
    return out
