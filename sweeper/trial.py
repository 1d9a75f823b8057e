"""run_trial(TrialConfig) -> TrialResult: the one entry to a trial."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import torch

from sweeper import speed
from sweeper.config import Scenario, TrialConfig
from sweeper.energy import RoundUsage, load_profiles, modeled_ledger
from sweeper.errors import SweeperError
from sweeper.fl import run_trial_federation
from sweeper.kws.dataset import client_partitions, dataset_root, partition_stats
from sweeper.kws.task import model_info
from sweeper.result import RoundRecord, TrialResult


def run_trial(config: TrialConfig) -> TrialResult:
    """Run one federation and account its energy. Never raises: a failure is a result."""
    started = time.perf_counter()
    try:
        torch.set_num_threads(max(1, config.scenario.cpus_per_trial))
        speed_in_force = speed.apply(config.leverages)
        rounds = run_trial_federation(config)
        result = _result(config, rounds)
        result.info["speed"] = {**speed_in_force, "torch_threads": rounds[-1].torch_threads}
    except SweeperError as exc:
        return TrialResult.failed(str(exc))
    except Exception as exc:  # a trial's crash must not take the sweep down
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return TrialResult.failed(f"{type(exc).__name__}: {exc} "
                                  f"(at {last.filename}:{last.lineno})")
    result.wall_s = time.perf_counter() - started
    return result


def _result(config: TrialConfig, rounds: list) -> TrialResult:
    profiles = load_profiles()
    ledger = modeled_ledger(profiles.hosts[config.scenario.host_profile],
                            profiles.networks[config.scenario.network_profile])
    records = []
    for stats in rounds:
        if stats.clients_ok == 0:
            raise SweeperError(f"round {stats.round}: every client failed; first error: "
                               f"{stats.errors[0] if stats.errors else 'unknown'}")
        energy = ledger.add_round(RoundUsage(stats.client_cpu_s, stats.server_cpu_s,
                                             stats.bytes_up, stats.bytes_down))
        records.append(RoundRecord(stats.round, stats.accuracy, stats.loss, stats.bytes_up,
                                   stats.bytes_down, stats.wall_s, ledger.total_j, energy,
                                   stats.client_accuracy,
                                   sum(stats.examples_by_client.values())))
    if not records:
        raise SweeperError("the federation ran no round")
    return TrialResult(
        rounds=records,
        accuracy=records[-1].accuracy,
        energy_j=ledger.total_j,
        bytes_total=sum(r.bytes_up + r.bytes_down for r in records),
        meters=ledger.provenance(),
        info={"partition": partition_stats(config.scenario, config.seed),
              "model": model_info(config),
              "examples_by_client": {
                  stats.round: {str(stats.client_of_node.get(node, f"node-{node}")): count
                                for node, count in sorted(stats.examples_by_client.items())}
                  for stats in rounds},
              "selection_cpu_s": [stats.selection_cpu_s for stats in rounds],
              "bytes_by_client": {
            stats.round: {str(stats.client_of_node.get(node, f"node-{node}")):
                          {"up": up, "down": down}
                          for node, (up, down) in sorted(stats.bytes_by_client.items())}
            for stats in rounds}},
    )


def prepare(scenario: Scenario, seed: int,
            progress: Callable[[int, int], None] | None = None) -> None:
    """Generate and featurize the scenario's dataset once, so trials only read the cache,
    and check that it can be partitioned (a bad scenario fails here, not in every trial).
    `progress(done, total)` follows the corpus synthesis, when there is one."""
    dataset_root(scenario, progress)
    client_partitions(scenario, seed)
