"""A `RoundWatcher` across processes. Under the deployment engine the ServerApp runs in a
`flwr-serverapp` process while the trial's watcher (node meter, prune rule) lives in the
trial's: at every round boundary the ServerApp writes a request file and waits for the
trial's reply, so the watcher sees the same calls, in the same order and at the same
moments, as under the simulation engine."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.fl.strategy import RoundStats

WAIT_S = 0.002


def _write(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # readers never see half a file


class RelayedWatcher:
    """The ServerApp's side: forwards each call and returns the trial's answer."""

    def __init__(self, directory: Path, timeout_s: float = 600.0) -> None:
        self.directory, self.timeout_s = directory, timeout_s
        self.calls = 0

    def _ask(self, kind: str, payload: Any) -> Any:
        self.calls += 1
        name = f"{self.calls:06d}"
        _write(self.directory / f"{name}.req", {"kind": kind, "payload": payload})
        reply = self.directory / f"{name}.rep"
        deadline = time.monotonic() + self.timeout_s
        while not reply.exists():
            if time.monotonic() > deadline:
                raise SweeperError(f"no answer from the trial to {kind} in {self.timeout_s:g} s")
            time.sleep(WAIT_S)
        return json.loads(reply.read_text())

    def round_started(self, server_round: int) -> None:
        self._ask("round_started", server_round)

    def round_ended(self, server_round: int) -> dict[str, float] | None:
        return self._ask("round_ended", server_round)

    def stop_reason(self, stats: RoundStats) -> str | None:
        return self._ask("stop_reason", stats.to_dict())


class Answerer:
    """The trial's side: `poll()` answers every request not answered yet."""

    def __init__(self, directory: Path, watcher) -> None:
        self.directory, self.watcher = directory, watcher
        self.answered: set[str] = set()

    def poll(self) -> None:
        for request in sorted(self.directory.glob("*.req")):
            if request.name in self.answered:
                continue
            call = json.loads(request.read_text())
            kind, payload = call["kind"], call["payload"]
            if kind == "stop_reason":
                payload = RoundStats.from_dict(payload)
            _write(request.with_suffix(".rep"), getattr(self.watcher, kind)(payload))
            self.answered.add(request.name)
