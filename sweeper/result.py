"""What a trial returns: per-round records and the final `TrialResult` (units in the names)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

OUTSIDE_SPACE = "outside_space"  # info key: why a --force'd trial is not a point of its space
OBJECTIVE_METRICS = ("accuracy", "energy_j", "wall_s", "bytes_total", "co2_g",
                     "node_energy_j", "energy_to_accuracy_j")


@dataclass(frozen=True)
class MeterInfo:
    """Where one energy component came from."""

    meter: str  # e.g. "cpu_time x host profile 'laptop'"
    kind: str  # "measured" | "modeled"


@dataclass(frozen=True)
class RoundRecord:
    round: int
    accuracy: float
    loss: float
    bytes_up: int
    bytes_down: int
    wall_s: float
    energy_j: float  # cumulative up to and including this round
    energy: dict[str, float]  # cumulative joules per component
    client_accuracy: float = float("nan")  # global model on the clients' held-out data
    examples_used: int = 0  # training examples touched this round, all clients


@dataclass
class TrialResult:
    rounds: list[RoundRecord] = field(default_factory=list)
    accuracy: float = float("nan")
    energy_j: float = float("nan")
    wall_s: float = float("nan")
    bytes_total: int = 0
    co2_g: float = float("nan")
    # whole node(s) over the trial's window, from a node energy source (e.g. Grid'5000
    # wattmeters through Kwollect) in `isolation: node` mode; provenance in meters/info
    node_energy_j: float = float("nan")
    # joules spent until the first round whose accuracy reached the space's
    # `target_accuracy` (NaN: not reached, or no target; see `energy_to_accuracy`)
    energy_to_accuracy_j: float = float("nan")
    status: str = "ok"  # "ok" | "failed" | "pruned" | "diverged" (loss NaN/inf; see reason)
    reason: str = ""
    meters: dict[str, MeterInfo] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # e.g. model size, partition stats
    # with `budget.repeats` > 1 (see `sweeper.repeats`): the objectives above are means
    # over the repeats, `ci95` their 95% Student-t half-widths
    repeats: int = 1
    ci95: dict[str, float] = field(default_factory=dict)

    def objective(self, name: str) -> float:
        return float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        data = dict(data)
        data["rounds"] = [RoundRecord(**r) for r in data.get("rounds", [])]
        data["meters"] = {k: MeterInfo(**v) for k, v in data.get("meters", {}).items()}
        return cls(**data)

    @classmethod
    def failed(cls, reason: str) -> TrialResult:
        return cls(status="failed", reason=reason)


def strict_json(value: Any) -> Any:
    """`value` with every NaN or infinite float as None (JSON has no NaN: a strict parser
    refuses Python's bare `NaN`); what is missing is said by a reason beside it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def energy_to_accuracy(rounds: list[RoundRecord], target: float) -> float:
    """Cumulative joules at the first round whose accuracy reaches `target`; NaN when no
    round does (a trial that never reaches the target is infeasible, never free)."""
    return next((r.energy_j for r in rounds if r.accuracy >= target), float("nan"))
