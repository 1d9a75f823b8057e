"""The engines: what runs a trial's Flower apps (`sweeper.fl`) as a federation.

Every engine has one face, `run_trial(config, watcher, info) -> list[RoundStats]`: run the
trial's federation, tell `watcher` (a `fl.server_app.RoundWatcher`) when rounds start and
end, put what the engine has to say about the run as a whole (notes, its own byte counts)
into `info`, and return the per-round accounting in round order. `ENGINES` names them; an
engine is imported only when a trial asks for it (the deployment engine brings Ray and
Flower's deployment runtime along).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from sweeper.engines.registry import ENGINES
from sweeper.plugins import resolve

if TYPE_CHECKING:  # this package is imported by the catalogue and the engines' processes
    from sweeper.config import TrialConfig
    from sweeper.fl.server_app import RoundWatcher
    from sweeper.fl.strategy import RoundStats


class Engine(Protocol):
    def __call__(self, config: TrialConfig, watcher: RoundWatcher | None = None,
                 info: dict | None = None) -> list[RoundStats]: ...


def in_partition_order(node_ids: Iterable[int], partition_of: dict[int, int]) -> list[int]:
    """`node_ids` in the order every engine's grid lists them: by the partition each node
    serves, unknown nodes after. Flower draws node ids at random and its strategies sample
    clients from this list: in id order, a seed would pick other partitions in every run."""
    return sorted(node_ids, key=lambda node: (node not in partition_of,
                                              partition_of.get(node, node)))


def engine(name: str) -> Engine:
    return resolve(ENGINES, name, "engine")


def run_trial_federation(config: TrialConfig, watcher: RoundWatcher | None = None,
                         info: dict | None = None) -> list[RoundStats]:
    """Run the trial's federation on its engine (its `engine` leverage, else its scenario's)."""
    from sweeper.config import engine_of

    return engine(engine_of(config))(config, watcher, info if info is not None else {})


__all__ = ["ENGINES", "Engine", "engine", "run_trial_federation"]
