"""The energy ledger: per-round usage -> cumulative joules per component, with provenance.

A meter turns one round's `RoundUsage` into joules for one component and says where the
number came from. Measured meters (RAPL, NVML, wattmeters) plug in as further `Meter`s
reading their own fields of `RoundUsage`; the ledger and its report do not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sweeper.energy.profiles import CarbonIntensity, DeviceProfile, HostProfile, NetworkProfile
from sweeper.result import MeterInfo


@dataclass(frozen=True, kw_only=True)  # by keyword: a new field cannot shift the others
class RoundUsage:
    """What one round used, as observed by the federation (inputs of the meters)."""

    client_cpu_s: float  # process CPU seconds spent in ClientApps (train + evaluate)
    server_cpu_s: float  # process CPU seconds of the server's aggregate + evaluate steps
    bytes_up: int  # serialized payload bytes, clients -> server
    bytes_down: int  # serialized payload bytes, server -> clients
    client_flops: float = 0.0  # FLOPs of the clients' training, evaluation and selection
    node_j: dict[str, float] | None = None  # a node meter's joules per zone over the round
    wall_s: float = 0.0  # the round's duration
    client_window_j: float = 0.0  # counter windows around the clients' own work, attributed
    wire_up: int | None = None  # bytes measured on the clients' links (deployment engine)
    wire_down: int | None = None


class Meter(Protocol):
    component: str
    info: MeterInfo

    def joules(self, usage: RoundUsage) -> float: ...


class CpuTimeMeter:
    """Modeled compute energy: CPU-seconds x per-core active power of a host profile."""

    def __init__(self, role: str, host: HostProfile) -> None:
        self.role = role
        self.component = f"{role}_compute_j"
        self.host = host
        self.info = MeterInfo(
            meter=f"process_cpu_time x host '{host.name}' ({host.watts_per_core} W/core; "
            f"{host.source})",
            kind="modeled",
        )

    def joules(self, usage: RoundUsage) -> float:
        cpu_s = usage.client_cpu_s if self.role == "client" else usage.server_cpu_s
        return cpu_s * self.host.watts_per_core


class PayloadBytesMeter:
    """Modeled communication energy: exact serialized bytes x J/byte of a network profile."""

    component = "communication_j"

    def __init__(self, network: NetworkProfile) -> None:
        self.network = network
        self.info = MeterInfo(
            meter=f"payload_bytes x network '{network.name}' (up {network.j_per_byte_up:g} J/B, "
            f"down {network.j_per_byte_down:g} J/B; {network.source})",
            kind="modeled",
        )

    def joules(self, usage: RoundUsage) -> float:
        return (usage.bytes_up * self.network.j_per_byte_up
                + usage.bytes_down * self.network.j_per_byte_down)


class WireBytesMeter(PayloadBytesMeter):
    """Communication energy from the bytes measured on the clients' links (payload plus
    protocol overhead), x J/byte of a network profile."""

    def __init__(self, network: NetworkProfile) -> None:
        super().__init__(network)
        self.info = MeterInfo(
            meter=f"wire_bytes (veth counters) x network '{network.name}' "
            f"(up {network.j_per_byte_up:g} J/B, down {network.j_per_byte_down:g} J/B; "
            f"{network.source})", kind="modeled")

    def joules(self, usage: RoundUsage) -> float:
        return ((usage.wire_up or 0) * self.network.j_per_byte_up
                + (usage.wire_down or 0) * self.network.j_per_byte_down)


class DeviceFlopsMeter:
    """Modeled client compute on the device the federation stands for: counted FLOPs x the
    device profile's J/FLOP at the trial's precision (a lower bound: peak-rate J/FLOP)."""

    component = "client_compute_j"

    def __init__(self, device: DeviceProfile, precision: str) -> None:
        self.j_per_flop = device.j_per_flop[precision]
        self.info = MeterInfo(
            meter=f"torch FLOP counter x device '{device.name}' ({self.j_per_flop:g} J/FLOP "
            f"at {precision}; {device.source})", kind="modeled")

    def joules(self, usage: RoundUsage) -> float:
        return usage.client_flops * self.j_per_flop


class ClientWindowMeter:
    """Measured client compute on a shared node: a counter window around each client's own
    work, times the client's share of the machine's busy CPU time (`energy.windows`)."""

    component = "client_compute_j"

    def __init__(self, name: str) -> None:
        self.info = MeterInfo(meter=f"{name}, windowed around each client's work x its "
                              "share of the machine's busy CPU time (/proc/stat)",
                              kind="measured")

    def joules(self, usage: RoundUsage) -> float:
        return usage.client_window_j


def split_node_energy(usage: RoundUsage, idle_w: float) -> tuple[float, float]:
    """(active, idle) joules of a node meter's round: idle is the node's idle power over the
    round's duration (never more than the node used), active is the rest."""
    total = sum((usage.node_j or {}).values())
    idle = min(total, idle_w * usage.wall_s)
    return total - idle, idle


class NodeEnergyMeter:
    """Measured energy of the whole node over each round, less its idle share (clients and
    server alike): only meaningful with one trial per node (`isolation: node`)."""

    component = "node_compute_j"

    def __init__(self, name: str, idle_w: float) -> None:
        self.idle_w = idle_w
        self.info = MeterInfo(meter=f"{name}, whole node, isolation: node, minus idle_j",
                              kind="measured")

    def joules(self, usage: RoundUsage) -> float:
        return split_node_energy(usage, self.idle_w)[0]


class NodeIdleMeter:
    """The node's idle power, measured by its meter before the trial, over each round."""

    component = "idle_j"

    def __init__(self, name: str, idle_w: float, probe_s: float) -> None:
        self.idle_w = idle_w
        self.info = MeterInfo(meter=f"{name}: idle power {idle_w:.3f} W measured over "
                              f"{probe_s:g} s before the trial x round wall time",
                              kind="measured")

    def joules(self, usage: RoundUsage) -> float:
        return split_node_energy(usage, self.idle_w)[1]


@dataclass
class EnergyLedger:
    meters: list[Meter]
    cumulative: dict[str, float] = field(default_factory=dict)

    def add_round(self, usage: RoundUsage) -> dict[str, float]:
        """Account one round; returns the cumulative joules per component."""
        for meter in self.meters:
            self.cumulative[meter.component] = (self.cumulative.get(meter.component, 0.0)
                                                + meter.joules(usage))
        return dict(self.cumulative)

    @property
    def total_j(self) -> float:
        return sum(self.cumulative.values())

    def provenance(self) -> dict[str, MeterInfo]:
        return {meter.component: meter.info for meter in self.meters}


def modeled_ledger(host: HostProfile, network: NetworkProfile,
                   device: DeviceProfile | None = None, precision: str = "fp32",
                   client_windows: str | None = None, wire: bool = False) -> EnergyLedger:
    """The always-available ledger: client compute (CPU time on the host, or FLOPs on a
    device profile, or the named counter windowed around each client), server CPU time,
    and payload bytes (bytes on the wire with `wire`)."""
    client: Meter
    if device is not None:
        client = DeviceFlopsMeter(device, precision)
    elif client_windows is not None:
        client = ClientWindowMeter(client_windows)
    else:
        client = CpuTimeMeter("client", host)
    return EnergyLedger([client, CpuTimeMeter("server", host), _bytes_meter(network, wire)])


def measured_node_ledger(node_meter: str, network: NetworkProfile, idle_w: float = 0.0,
                         idle_probe_s: float = 0.0, wire: bool = False) -> EnergyLedger:
    """Node counters for all compute of the round (split into active and idle when the
    node's idle power was probed), payload bytes (or bytes on the wire) for communication."""
    meters: list[Meter] = [NodeEnergyMeter(node_meter, idle_w)]
    if idle_probe_s > 0:
        meters.append(NodeIdleMeter(node_meter, idle_w, idle_probe_s))
    return EnergyLedger([*meters, _bytes_meter(network, wire)])


def _bytes_meter(network: NetworkProfile, wire: bool) -> Meter:
    return WireBytesMeter(network) if wire else PayloadBytesMeter(network)


def co2_g(joules: float, intensity: CarbonIntensity) -> float:
    """Grams of CO2e of `joules` of electricity at the region's carbon intensity."""
    return joules / 3.6e6 * intensity.g_per_kwh
