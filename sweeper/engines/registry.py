"""The engines by name, readable without importing any (the leverage catalogue takes the
`engine` choices from here): name -> "module:function", the function an `Engine`."""

from __future__ import annotations

ENGINES: dict[str, str] = {
    "simulation": "sweeper.engines.simulation:run_trial",
    "deployment": "sweeper.engines.deployment:run_trial",
}

__all__ = ["ENGINES"]
