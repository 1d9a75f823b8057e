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


@dataclass(frozen=True)
class RoundUsage:
    """What one round used, as observed by the federation (inputs of the meters)."""

    client_cpu_s: float  # process CPU seconds spent in ClientApps (train + evaluate)
    server_cpu_s: float  # process CPU seconds of the server's aggregate + evaluate steps
    bytes_up: int  # serialized payload bytes, clients -> server
    bytes_down: int  # serialized payload bytes, server -> clients
    client_flops: float = 0.0  # FLOPs of the clients' training, evaluation and selection
    node_j: dict[str, float] | None = None  # a node meter's joules per zone over the round
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


class NodeEnergyMeter:
    """Measured energy of the whole node over each round (clients, server and idle alike):
    only meaningful with one trial per node (`isolation: node`)."""

    component = "node_compute_j"

    def __init__(self, name: str) -> None:
        self.info = MeterInfo(meter=f"{name}, whole node, isolation: node", kind="measured")

    def joules(self, usage: RoundUsage) -> float:
        return sum((usage.node_j or {}).values())


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
                   wire: bool = False) -> EnergyLedger:
    """The always-available ledger: client compute (CPU time on the host, or FLOPs on a
    device profile), server CPU time, and payload bytes (bytes on the wire with `wire`)."""
    client: Meter = (DeviceFlopsMeter(device, precision) if device is not None
                     else CpuTimeMeter("client", host))
    return EnergyLedger([client, CpuTimeMeter("server", host), _bytes_meter(network, wire)])


def measured_node_ledger(node_meter: str, network: NetworkProfile,
                         wire: bool = False) -> EnergyLedger:
    """Node counters for all compute of the round, payload bytes for communication."""
    return EnergyLedger([NodeEnergyMeter(node_meter), _bytes_meter(network, wire)])


def _bytes_meter(network: NetworkProfile, wire: bool) -> Meter:
    return WireBytesMeter(network) if wire else PayloadBytesMeter(network)


def co2_g(joules: float, intensity: CarbonIntensity) -> float:
    """Grams of CO2e of `joules` of electricity at the region's carbon intensity."""
    return joules / 3.6e6 * intensity.g_per_kwh
