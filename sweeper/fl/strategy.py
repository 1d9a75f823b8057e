"""FedAvg that decodes client updates before aggregating and accounts every round.

Per round it records the serialized payload bytes of every message in each direction, the
CPU time clients report, the server's own CPU time and the round's wall time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from sweeper.fl.codecs import Codec
from sweeper.fl.task import TRIAL_CONFIG_KEY, apply_update, payload_bytes


@dataclass
class RoundStats:
    round: int
    bytes_up: int = 0
    bytes_down: int = 0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    clients_ok: int = 0
    clients_failed: int = 0
    errors: list[str] = field(default_factory=list)  # reasons of failed clients
    train_loss: float = float("nan")
    accuracy: float = float("nan")
    loss: float = float("nan")
    wall_s: float = 0.0
    started: float = 0.0


class AccountedFedAvg(FedAvg):
    def __init__(self, codec: Codec, trial_config_json: str, clients_per_round: int,
                 num_clients: int) -> None:
        super().__init__(fraction_train=clients_per_round / num_clients, fraction_evaluate=0.0,
                         min_train_nodes=clients_per_round, min_evaluate_nodes=0,
                         min_available_nodes=num_clients)
        self.codec = codec
        self.trial_config_json = trial_config_json
        self.rounds: dict[int, RoundStats] = {}
        self._global: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        stats = self.rounds.setdefault(server_round, RoundStats(server_round))
        stats.started = time.perf_counter()
        config[TRIAL_CONFIG_KEY] = self.trial_config_json
        self._global = arrays
        messages = list(super().configure_train(server_round, arrays, config, grid))
        stats.bytes_down += sum(payload_bytes(m) for m in messages)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        started = time.process_time()
        stats = self.rounds[server_round]
        replies = list(replies)
        for msg in replies:
            stats.bytes_up += payload_bytes(msg)
            if msg.has_error():
                stats.clients_failed += 1
                stats.errors.append(msg.error.reason)
                continue
            stats.clients_ok += 1
            metrics = msg.content["metrics"]
            stats.client_cpu_s += float(metrics["cpu_s"])
            decoded = self.codec.decode(msg.content["arrays"])
            msg.content["arrays"] = apply_update(self._global, decoded)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if metrics is not None:
            stats.train_loss = float(metrics["train_loss"])
        stats.server_cpu_s += time.process_time() - started
        return arrays, metrics
