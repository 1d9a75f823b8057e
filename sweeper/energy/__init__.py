"""Energy: meters and models -> per-round, per-component joules with their provenance."""

from sweeper.energy.ledger import (
    EnergyLedger,
    RoundUsage,
    co2_g,
    measured_node_ledger,
    modeled_ledger,
)
from sweeper.energy.profiles import load_profiles

__all__ = ["EnergyLedger", "RoundUsage", "co2_g", "load_profiles", "measured_node_ledger",
           "modeled_ledger"]
