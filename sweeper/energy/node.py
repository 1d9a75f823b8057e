"""Node-level energy meters, read around each round in `isolation: node` mode (one trial
per node, so the node's energy is the trial's): Zeus's RAPL/NVML windows where Zeus finds
counters, else the powercap tree directly. `open_node_meter` says which one runs, or why
none can, so the ledger falls back to the modeled path and records the reason."""

from __future__ import annotations

import time
from typing import Protocol

from sweeper.energy.rapl import PowercapRapl, RaplUnavailable


class NodeMeter(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> dict[str, float]: ...  # joules per zone since start()


class PowercapMeter:
    def __init__(self) -> None:
        self.rapl = PowercapRapl()
        self.name = "rapl-powercap (" + ", ".join(z.name for z in self.rapl.zones) + ")"
        self._before: dict[str, int] = {}

    def start(self) -> None:
        self._before = self.rapl.read()

    def stop(self) -> dict[str, float]:
        return self.rapl.joules_since(self._before, self.rapl.read())


class ZeusMeter:
    """Zeus's ZeusMonitor: CPU (RAPL) and GPU (NVML) energy over measurement windows."""

    def __init__(self) -> None:
        from zeus.monitor import ZeusMonitor

        self.monitor = ZeusMonitor(approx_instant_energy=True)
        if not self.monitor.cpu_indices and not self.monitor.gpu_indices:
            raise RuntimeError("Zeus found no RAPL and no NVML counter on this node")
        self.monitor.begin_window("sweeper-probe")  # raises where a counter is unreadable
        self.monitor.end_window("sweeper-probe")
        self.name = (f"zeus (cpus {self.monitor.cpu_indices}, gpus "
                     f"{self.monitor.gpu_indices})")

    def start(self) -> None:
        self.monitor.begin_window("sweeper-round")

    def stop(self) -> dict[str, float]:
        measured = self.monitor.end_window("sweeper-round")
        out = {f"gpu{i}": float(j) for i, j in measured.gpu_energy.items()}
        for i, j in (measured.cpu_energy or {}).items():
            out[f"cpu{i}"] = float(j)
        for i, j in (measured.dram_energy or {}).items():
            out[f"cpu{i}/dram"] = float(j)
        return out


def probe_idle_w(meter: NodeMeter, seconds: float) -> float:
    """The node's power while this process sleeps for `seconds` (watts): its idle power,
    as long as nothing else runs on the node (`isolation: node`)."""
    meter.start()
    time.sleep(seconds)
    return sum(meter.stop().values()) / seconds


# name -> meter class, in the order "auto" tries them; a class raises in __init__ (ImportError,
# RaplUnavailable or any error) where it cannot read this node's counters
NODE_METERS: dict[str, type[NodeMeter]] = {"zeus": ZeusMeter, "rapl": PowercapMeter}


def open_node_meter(choice: str) -> tuple[NodeMeter | None, list[str]]:
    """The first working node meter of `choice`: "auto" (zeus, then rapl) or a
    comma-separated list in order of preference; the reasons the others could not run."""
    order = list(NODE_METERS) if choice == "auto" else [c.strip() for c in choice.split(",")]
    reasons = []
    for name in order:
        try:
            return NODE_METERS[name](), reasons
        except ImportError as exc:
            reasons.append(f"{name}: not installed ({exc})")
        except RaplUnavailable as exc:
            reasons.append(f"{name}: {exc}")
        except Exception as exc:  # Zeus raises plain errors when it finds no counter
            reasons.append(f"{name}: {type(exc).__name__}: {exc}")
    return None, reasons
