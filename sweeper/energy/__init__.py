"""Energy: meters and models -> per-round, per-component joules with their provenance.

This is the package's face: the rest of sweeper imports these names from `sweeper.energy`,
not from its modules (none of which imports torch, Flower or Ray). A node meter is added to
`NODE_METERS` (`energy/node.py`); a new energy component is a `Meter` reading a new field
of `RoundUsage` (`energy/ledger.py`).
"""

from sweeper.energy.ledger import (
    EnergyLedger,
    PayloadBytesMeter,
    RoundUsage,
    co2_g,
    measured_node_ledger,
    modeled_ledger,
)
from sweeper.energy.node import NODE_METERS, NodeMeter, open_node_meter, probe_idle_w
from sweeper.energy.profiles import LinkShape, link_shape, load_profiles
from sweeper.energy.rapl import PowercapRapl, RaplUnavailable
from sweeper.energy.windows import client_window, window_meter

__all__ = ["NODE_METERS", "EnergyLedger", "LinkShape", "NodeMeter", "PayloadBytesMeter",
           "PowercapRapl", "RaplUnavailable", "RoundUsage", "client_window", "co2_g",
           "link_shape", "load_profiles", "measured_node_ledger", "modeled_ledger",
           "open_node_meter", "probe_idle_w", "window_meter"]
