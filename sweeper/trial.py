"""run_trial(TrialConfig) -> TrialResult: the one entry to a trial."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sweeper import speed
from sweeper.attempts import RoundProgress
from sweeper.config import Scenario, TrialConfig, engine_of
from sweeper.energy import (
    EnergyLedger,
    NodeMeter,
    RoundUsage,
    co2_g,
    load_profiles,
    measured_node_ledger,
    modeled_ledger,
    open_node_meter,
    probe_idle_w,
    window_meter,
)
from sweeper.engines import run_trial_federation
from sweeper.engines.deployment.wire import FIELDS as WIRE_FIELDS
from sweeper.engines.deployment.wire import wire_summary
from sweeper.environment import machine
from sweeper.errors import SweeperError
from sweeper.fl.server_app import Watchers, divergence
from sweeper.fl.warmup import warm_up
from sweeper.fronts import PruneRule
from sweeper.kws import client_partitions, dataset_root, model_info, partition_stats
from sweeper.result import MeterInfo, RoundRecord, TrialResult


def run_trial(config: TrialConfig, prune: PruneRule | None = None) -> TrialResult:
    """Run one federation and account its energy. Never raises: a failure is a result.
    With `prune`, the federation stops after the first round that rule rejects."""
    cpu_started = time.process_time()
    try:
        torch.set_num_threads(max(1, config.scenario.cpus_per_trial))
        with speed.applied(config.leverages) as speed_settings:
            result = _run(config, prune)
            result.info["speed"].update(speed_settings.in_force)
        if speed_settings.restore_problems:
            result.info["speed_restore_failed"] = speed_settings.restore_problems
        return _on_this_machine(result)
    except SweeperError as exc:
        reason = str(exc)
    except Exception as exc:  # a trial's crash must not take the sweep down
        last = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"{type(exc).__name__}: {exc} (at {last.filename}:{last.lineno})"
    return _on_this_machine(_failed(config, reason, time.process_time() - cpu_started))


def _on_this_machine(result: TrialResult) -> TrialResult:
    facts = machine()
    governors = result.info.get("speed", {}).get("cpu_governor")
    if governors:  # what the trial's leverage set, not the node's own (restored by now)
        facts["cpufreq_governor"] = ",".join(governors)
    result.info["machine"] = facts
    return result


def _run(config: TrialConfig, prune: PruneRule | None) -> TrialResult:
    warm_started = time.process_time()
    if engine_of(config) == "simulation":  # deployment's ClientApps run elsewhere
        warm_up(config)
    warmup_cpu_s = time.process_time() - warm_started
    plan = meter_plan(config.scenario)
    watcher = (TrialWatcher(plan.node, prune, trial_ledger(config, plan))
               if plan.node is not None or prune is not None else None)
    progress = RoundProgress()  # the round, for a sweep's live view (a no-op outside Ray)
    if progress.task_id is not None or watcher is not None:
        watcher = Watchers(watcher, progress if progress.task_id is not None else None)
    engine_info: dict = {}
    started = time.perf_counter()  # the federation's time, not the warm-up's or probe's
    started_unix = time.time()
    rounds = run_trial_federation(config, watcher, engine_info)
    wire = bool(rounds) and all(stats.wire_by_client for stats in rounds)
    result = _result(config, rounds, trial_ledger(config, plan, wire))
    result.wall_s = time.perf_counter() - started
    # round r ended at this + the wall times of rounds 1..r (MLflow's metric timestamps)
    result.info["federation_started_unix"] = started_unix
    result.info.update(engine_info)
    result.info["speed"] = {"torch_threads": rounds[-1].torch_threads}
    result.info["meter_selection"] = plan.selection
    # what the counted windows left out: the process's cold start, when this trial had it
    result.info["warmup_cpu_s"] = warmup_cpu_s
    return result


def _failed(config: TrialConfig, reason: str, cpu_s: float) -> TrialResult:
    """A failed trial, with the energy it used until it failed (for the sweep's energy
    budget), modeled from its process's CPU time: what ran elsewhere (a deployment's
    SuperNodes) is not in it, and the provenance says so."""
    result = TrialResult.failed(reason)
    _charge_spent(result, config, cpu_s, f"CPU time of the trial's own process until it "
                  f"failed ({cpu_s:.3g} s)", "; child processes not counted")
    return result


def charge_unreported(result: TrialResult, config: TrialConfig, ran_s: float) -> None:
    """A failed trial that could not say what it used (killed at its timeout, its worker
    lost) is charged, for the energy budget, as if its reserved CPUs were busy for all of
    the `ran_s` seconds it may have run: an upper bound, never the 0 J of no report."""
    if result.status != "failed" or "spent_j" in result.info:
        return
    cpus = config.scenario.cpus_per_trial
    _charge_spent(result, config, ran_s * cpus, f"upper bound: its process could not report; "
                  f"{cpus} reserved CPU(s) busy for the {ran_s:.3g} s it may have run "
                  "(driver clock)")


def _charge_spent(result: TrialResult, config: TrialConfig, cpu_s: float, how: str,
                  note: str = "") -> None:
    """`spent_j` of a failed trial: `cpu_s` CPU-seconds (measured `how`) x the host
    profile's watts per core, modeled."""
    host = load_profiles().hosts[config.scenario.host_profile]
    result.info["spent_j"] = cpu_s * host.watts_per_core
    result.meters["spent_j"] = MeterInfo(
        f"{how} x host '{host.name}' ({host.watts_per_core} W/core){note}", "modeled")


class TrialWatcher:
    """A `fl.server_app.RoundWatcher`: reads the node meter (if any) around every round and
    applies the prune rule (if any) to the energy spent so far."""

    def __init__(self, meter: NodeMeter | None, rule: PruneRule | None,
                 ledger: EnergyLedger) -> None:
        self.meter, self.rule, self.ledger = meter, rule, ledger

    def round_started(self, server_round: int) -> None:
        if self.meter is not None:
            self.meter.start()

    def round_ended(self, server_round: int) -> dict[str, float] | None:
        return self.meter.stop() if self.meter is not None else None

    def stop_reason(self, stats) -> str | None:
        if self.rule is None:
            return None
        self.ledger.add_round(_usage(stats))
        reason = self.rule.reason(self.ledger.total_j)
        return f"round {stats.round}: {reason}" if reason else None


def _usage(stats) -> RoundUsage:
    wire = stats.wire_by_client.values()
    return RoundUsage(client_cpu_s=stats.client_cpu_s, server_cpu_s=stats.server_cpu_s,
                      bytes_up=stats.bytes_up, bytes_down=stats.bytes_down,
                      client_flops=stats.client_flops, node_j=stats.node_j,
                      wall_s=stats.wall_s, client_window_j=stats.client_window_j,
                      wire_up=sum(v[0] for v in wire) if wire else None,
                      wire_down=sum(v[1] for v in wire) if wire else None)


@dataclass
class MeterPlan:
    """Which counters a trial reads: a node meter around each round (`isolation: node`,
    with the node's idle power probed first), or counter windows around each client's
    work (`isolation: shared`), or none; `selection` says which and why, for the record."""

    selection: dict[str, object]
    node: NodeMeter | None = None
    idle_w: float = 0.0
    client_windows: str | None = None


def trial_ledger(config: TrialConfig, plan: MeterPlan, wire: bool = False) -> EnergyLedger:
    """`wire`: communication energy from the bytes measured on the clients' links."""
    profiles = load_profiles()
    scenario = config.scenario
    network = profiles.networks[scenario.network_profile]
    if plan.node is not None:
        return measured_node_ledger(plan.node.name, network, plan.idle_w,
                                    scenario.idle_probe_s, wire)
    device = profiles.devices[scenario.device_profile] if scenario.device_profile else None
    return modeled_ledger(profiles.hosts[scenario.host_profile], network, device,
                          str(config.leverages["precision"]), plan.client_windows, wire)


def meter_plan(scenario: Scenario) -> MeterPlan:
    """The counters this trial may use, and why (or why not), per `meters`/`isolation`;
    counters asked for by name (not `auto`) that cannot be read fail the trial."""
    if scenario.meters == "modeled":
        return MeterPlan({"node_meter": None, "why": "meters: modeled"})
    shared = scenario.isolation != "node"
    if shared:
        name, reasons = window_meter(scenario.meters)
        meter = None
    else:
        meter, reasons = open_node_meter(scenario.meters)
        name = meter.name if meter is not None else None
    if name is None and scenario.meters != "auto":
        raise SweeperError(f"meters: {scenario.meters} asked for but unavailable: "
                           + "; ".join(reasons))
    if name is None:
        return MeterPlan({"node_meter": None, "why": "no counter: " + "; ".join(reasons)})
    if shared:
        return MeterPlan({"node_meter": None, "client_windows": name, "not_used": reasons,
                          "why": "isolation: shared: node counters also see other trials, "
                          "so they are read around each client's work and attributed by "
                          "its CPU share"}, client_windows=name)
    idle_w = probe_idle_w(meter, scenario.idle_probe_s) if scenario.idle_probe_s > 0 else 0.0
    return MeterPlan({"node_meter": name, "not_used": reasons, "idle_w": idle_w}, meter,
                     idle_w)


def _by_client(rounds: list, values: Callable[[object], dict]) -> dict:
    """{round: {partition id: value}} from per-node values of each round."""
    return {stats.round: {str(stats.client_of_node.get(node, f"node-{node}")): value
                          for node, value in sorted(values(stats).items())}
            for stats in rounds}


def _result(config: TrialConfig, rounds: list, ledger: EnergyLedger) -> TrialResult:
    profiles = load_profiles()
    scenario = config.scenario
    records = []
    for stats in rounds:
        if stats.clients_ok == 0:
            raise SweeperError(f"round {stats.round}: every client failed; first error: "
                               f"{stats.errors[0] if stats.errors else 'unknown'}")
        energy = ledger.add_round(_usage(stats))
        records.append(RoundRecord(stats.round, stats.accuracy, stats.loss, stats.bytes_up,
                                   stats.bytes_down, stats.wall_s, ledger.total_j, energy,
                                   stats.client_accuracy,
                                   sum(stats.examples_by_client.values())))
    if not records:
        raise SweeperError("the federation ran no round")
    carbon = profiles.carbon[scenario.carbon_region]
    meters = ledger.provenance()
    meters["co2_g"] = MeterInfo(f"energy_j x {carbon.g_per_kwh:g} gCO2e/kWh "
                                f"({carbon.region}; {carbon.source})", "modeled")
    stopped = next((stats.stopped for stats in rounds if stats.stopped), None)
    return TrialResult(
        status=("diverged" if any(divergence(stats) for stats in rounds) else
                "pruned" if stopped else "ok"),
        reason=stopped or "",
        rounds=records,
        accuracy=records[-1].accuracy,
        energy_j=ledger.total_j,
        co2_g=co2_g(ledger.total_j, carbon),
        bytes_total=sum(r.bytes_up + r.bytes_down for r in records),
        meters=meters,
        info={"partition": partition_stats(scenario, config.seed),
              "model": model_info(config),
              "flops": [stats.client_flops for stats in rounds],
              "server_cpu_s": [stats.server_cpu_s for stats in rounds],
              "cpu_s_by_client": _by_client(rounds, lambda s: s.cpu_s_by_client),
              "examples_by_client": _by_client(rounds, lambda s: s.examples_by_client),
              "selection_cpu_s": [stats.selection_cpu_s for stats in rounds],
              "bytes_by_client": _by_client(rounds, lambda s: {
                  node: {"up": up, "down": down}
                  for node, (up, down) in s.bytes_by_client.items()}),
              "engine": engine_of(config),
              **_wire(rounds)},
    )


def _wire(rounds: list) -> dict:
    """Bytes measured on the clients' links, where the engine measured them."""
    summary = wire_summary(rounds)
    if summary is None:
        return {}
    return {"wire": summary,
            "wire_by_client": {stats.round: {str(p): dict(zip(WIRE_FIELDS, v, strict=True))
                                             for p, v in sorted(stats.wire_by_client.items())}
                               for stats in rounds}}


def prepare(scenario: Scenario, seed: int,
            progress: Callable[[int, int], None] | None = None) -> None:
    """Generate and featurize the scenario's dataset once, so trials only read the cache,
    and check that it can be partitioned (a bad scenario fails here, not in every trial).
    `progress(done, total)` follows the corpus synthesis, when there is one."""
    dataset_root(scenario, progress)
    client_partitions(scenario, seed)
