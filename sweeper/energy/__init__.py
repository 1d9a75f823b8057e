"""Energy: meters and models -> per-round, per-component joules with their provenance."""

from sweeper.energy.ledger import EnergyLedger, RoundUsage, modeled_ledger
from sweeper.energy.profiles import load_profiles

__all__ = ["EnergyLedger", "RoundUsage", "load_profiles", "modeled_ledger"]
