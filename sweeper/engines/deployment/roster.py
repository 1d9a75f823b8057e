"""The roster: which Flower node id serves which client partition.

Flower draws a SuperNode's id at random when it registers, and its strategies sample clients
from `grid.get_node_ids()` with the module-level `random`. The simulation engine lists nodes
in partition order, so that a seed samples the same partitions in every run; here each of
our SuperNodes enrolls its id under its partition in the federation's folder (`ROSTER_ENV`),
the trial hands the roster to its ServerApp, and the ServerApp lists nodes in that order:
the same seed samples the same partitions under both engines. SuperNodes on other machines
(Ray placement across nodes) have no such folder; their nodes keep Flower's order.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROSTER_ENV = "SWEEPER_ROSTER"  # the federation's roster folder (absent: nobody enrolls)
ROSTER = "roster"  # that folder, in the federation's home


def roster_folder(home: Path) -> Path:
    """The roster folder of a federation at `home`, made owner-only: the order clients are
    sampled in is read from it."""
    folder = home / ROSTER
    folder.mkdir(mode=0o700)
    return folder


def enroll(partition: str, node_id: int) -> None:
    """Write this SuperNode's `node_id` under `partition` (whole, then renamed); silent
    where this machine has no roster folder of the federation's."""
    folder = os.environ.get(ROSTER_ENV)
    if not folder:
        return
    path = Path(folder) / partition
    tmp = path.with_name(f".{partition}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(str(node_id))
        os.replace(tmp, path)


def read_roster(folder: Path) -> dict[int, int]:
    """Node id -> partition, of the SuperNodes enrolled in `folder` so far."""
    roster: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            with contextlib.suppress(OSError, ValueError):
                if not path.name.startswith("."):
                    roster[int(path.read_text())] = int(path.name)
    return roster
