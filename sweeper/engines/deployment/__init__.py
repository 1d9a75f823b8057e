"""The deployment engine: Flower's own SuperLink and SuperNode processes (see
`federation.py`), on loopback, in network namespaces behind shaped links, or placed by Ray.

Nothing is imported here: the engine's processes (`python -m sweeper.engines.deployment.…`)
import only what they run.
"""

from __future__ import annotations

OWNER_ENV = "SWEEPER_DEPLOYMENT_OWNER"  # in the environment of every process of a trial


def run_trial(config, watcher=None, info: dict | None = None):
    """The engine's face (see `sweeper.engines`)."""
    from sweeper.engines.deployment.federation import run_trial as run

    return run(config, watcher, info)
