"""Bytes on the wire: interface counters of each client's link, read by the ServerApp around
every round (a `RoundWatcher`), and their summary against the codec's own accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.fl.strategy import RoundStats

FIELDS = ("up_bytes", "down_bytes", "up_packets", "down_packets")


def read_counters(host_if: str) -> dict[str, int]:
    """A client's link seen from the bridge's end of its veth: rx is what the client sent."""
    stats = Path("/sys/class/net") / host_if / "statistics"
    rx_bytes, tx_bytes, rx_packets, tx_packets = (
        int((stats / name).read_text())
        for name in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"))
    return {"up_bytes": rx_bytes, "down_bytes": tx_bytes, "up_packets": rx_packets,
            "down_packets": tx_packets}


class WireCounters:
    """A `server_app.RoundWatcher`. A round's window runs from its start to the next round's
    start (or the end of the run), so the clients' evaluation messages, sent after the
    round's centralized evaluation, are in the round they are accounted to."""

    def __init__(self, interfaces: list[str]) -> None:
        self.interfaces = interfaces
        self.by_round: dict[int, dict[int, list[int]]] = {}
        self._open: tuple[int, list[dict[str, int]]] | None = None

    def _read(self) -> list[dict[str, int]]:
        return [read_counters(name) for name in self.interfaces]

    def round_started(self, server_round: int) -> None:
        now = self._read()
        self._close(now)
        self._open = (server_round, now)

    def round_ended(self, server_round: int) -> dict[str, float] | None:
        return None

    def stop_reason(self, stats: RoundStats) -> str | None:
        return None

    def finish(self) -> None:
        self._close(self._read())

    def _close(self, now: list[dict[str, int]]) -> None:
        if self._open is None:
            return
        server_round, then = self._open
        self.by_round[server_round] = {
            partition: [end[f] - start[f] for f in FIELDS]
            for partition, (start, end) in enumerate(zip(then, now, strict=True))}
        self._open = None


def wire_summary(rounds: list[RoundStats]) -> dict[str, Any] | None:
    """Measured bytes against the accounted (serialized message) bytes, with the protocol
    overhead (HTTP, TCP/IP and Ethernet headers, polling, heartbeats) in bytes and percent."""
    if not any(stats.wire_by_client for stats in rounds):
        return None
    out: dict[str, Any] = {}
    for i, direction in enumerate(("up", "down")):
        wire = sum(v[i] for stats in rounds for v in stats.wire_by_client.values())
        packets = sum(v[2 + i] for stats in rounds for v in stats.wire_by_client.values())
        accounted = sum(getattr(stats, f"bytes_{direction}") for stats in rounds)
        out[f"wire_{direction}_bytes"] = wire
        out[f"wire_{direction}_packets"] = packets
        out[f"accounted_{direction}_bytes"] = accounted
        out[f"overhead_{direction}_bytes"] = wire - accounted
        out[f"overhead_{direction}_pct"] = round(100 * (wire - accounted) / accounted, 2)
    return out
