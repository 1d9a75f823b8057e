"""Emulated edge links for the deployment engine: each SuperNode in a network namespace of
its own, joined to the SuperLink's bridge by a veth pair whose two ends are shaped with
`tc` from the trial's network profile (bandwidth with `tbf`; latency and loss with `netem`
where the kernel has it). The host ends' counters are the clients' bytes on the wire.

Names carry the owner's pid and start time, so the namespaces of a trial whose process
was killed are removed by the next trial that starts (`remove_stale`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sweeper.energy import LinkShape
from sweeper.engines.deployment.wire import read_counters
from sweeper.errors import SweeperError
from sweeper.runtime import runtime_dir

PREFIX = "sweeper"
SUBNET = "10.213"  # 10.213.<trial>.0/24: one /24 per running trial, inside its namespaces


def _ip(*args: str, netns: str | None = None) -> str:
    argv = ["ip", *(("netns", "exec", netns, "ip") if netns else ()), *args]
    return _run(argv)


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SweeperError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "network namespaces need iproute2 (ip, tc)"
    return None


def _owner(pid: int) -> str:
    """A process's pid and start time: pids are reused, the pair is not."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return f"{pid}.{stat.rsplit(')', 1)[1].split()[19]}"


def _alive(owner: str) -> bool:
    try:
        if "." not in owner:  # a bare pid, as names had before start times were added
            os.kill(int(owner), 0)
            return True
        return _owner(int(owner.split(".")[0])) == owner
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False


def owner_tag() -> str:
    """What this process's namespaces carry in their names."""
    return _owner(os.getpid())


def _ours() -> list[tuple[str, int, str]]:
    """(name, trial index, owner) of every namespace made by this module."""
    found = []
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        if len(parts) == 4 and parts[0] == PREFIX and parts[1].isdigit():
            found.append((name, int(parts[1]), parts[2]))
    return found


def remove_stale() -> None:
    """Namespaces and bridges left by trials whose process is gone."""
    for name, index, owner in _ours():
        if not _alive(owner):
            with contextlib.suppress(SweeperError):
                _ip("netns", "del", name)
            with contextlib.suppress(SweeperError):
                _ip("link", "del", f"sw{index}br")


@dataclass
class Client:
    netns: str
    host_if: str  # bridge side: its rx is the client's uplink, its tx the downlink
    node_if: str
    address: str


class Network:
    """A bridge on the host holding the SuperLink's address and one shaped namespace per
    client. Use as a context manager: everything is removed on exit, whatever happened."""

    def __init__(self, clients: int, shape: LinkShape) -> None:
        self.size, self.shape = clients, shape
        self.index = -1
        self.clients: list[Client] = []
        self.notes: list[str] = []

    @property
    def bridge(self) -> str:
        return f"sw{self.index}br"

    @property
    def server_address(self) -> str:
        return f"{SUBNET}.{self.index}.1"

    def __enter__(self) -> Network:
        try:
            with (runtime_dir() / "netns.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # trials of one node allocate in turn
                remove_stale()
                self.index = self._free_index()
                _ip("link", "add", self.bridge, "type", "bridge")
            _quiet_ipv6(self.bridge)
            _ip("addr", "add", f"{self.server_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.size):
                self._add_client(i)
            self._shape()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _free_index(self) -> int:
        taken = {index for _, index, _ in _ours()}
        # and any index whose bridge or veth still exists (e.g. a namespace being torn down)
        taken |= {int(m.group(1)) for p in Path("/sys/class/net").iterdir()
                  if (m := re.fullmatch(r"sw(\d+)(br|h\d+)", p.name))}
        for index in range(1, 255):
            if index not in taken:
                return index
        raise SweeperError("no free subnet for the trial's namespaces (254 in use)")

    def _add_client(self, i: int) -> None:
        netns = f"{PREFIX}-{self.index}-{owner_tag()}-c{i}"
        client = Client(netns, f"sw{self.index}h{i}", f"sw{self.index}n{i}",
                        f"{SUBNET}.{self.index}.{10 + i}")
        _ip("netns", "add", netns)
        self.clients.append(client)
        _ip("link", "add", client.host_if, "type", "veth", "peer", "name", client.node_if,
            "netns", netns)
        _quiet_ipv6(client.host_if)
        _ip("link", "set", client.host_if, "master", self.bridge)
        _ip("link", "set", client.host_if, "up")
        _run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w",
              "net.ipv6.conf.all.disable_ipv6=1"])
        _ip("link", "set", "lo", "up", netns=netns)
        _ip("addr", "add", f"{client.address}/24", "dev", client.node_if, netns=netns)
        _ip("link", "set", client.node_if, "up", netns=netns)

    def _shape(self) -> None:
        """Uplink shaped on the client's end, downlink on the bridge's end of each veth."""
        wants_netem = self.shape.latency_ms > 0 or self.shape.loss_pct > 0
        emulated = wants_netem
        for client in self.clients:
            for dev, mbps, netns in ((client.node_if, self.shape.up_mbps, client.netns),
                                     (client.host_if, self.shape.down_mbps, None)):
                has_netem = wants_netem and _netem(dev, self.shape, netns)
                emulated = emulated and has_netem
                _tbf(dev, mbps, netns, parent="1:1" if has_netem else None)
        if wants_netem and not emulated:
            self.notes.append("tc netem is not in this kernel: bandwidth shaped, latency "
                              f"{self.shape.latency_ms:g} ms and loss "
                              f"{self.shape.loss_pct:g}% not emulated")

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.clients[i].netns]

    def counters(self) -> list[dict[str, int]]:
        """Per client: bytes and packets up (host end's rx) and down (its tx)."""
        return [read_counters(client.host_if) for client in self.clients]

    def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(SweeperError):
                _ip("netns", "del", client.netns)  # takes the veth pair with it
        self.clients = []
        if self.index > 0:
            with contextlib.suppress(SweeperError):
                _ip("link", "del", self.bridge)


def _quiet_ipv6(dev: str) -> None:
    """No router solicitations or neighbour discovery in the counters."""
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("1")


def _tc(args: list[str], netns: str | None) -> subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "tc", *args], capture_output=True, text=True)


def _netem(dev: str, shape: LinkShape, netns: str | None) -> bool:
    """netem as the root qdisc (delay, loss); False where the kernel has no netem."""
    args = ["qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
            "delay", f"{shape.latency_ms}ms", "loss", f"{shape.loss_pct}%"]
    return _tc(args, netns).returncode == 0


def _tbf(dev: str, mbps: float, netns: str | None, parent: str | None) -> None:
    rate_bps = mbps * 1e6
    burst = max(16_000, int(rate_bps / 8 / 100))  # 10 ms worth of bytes, at least 16 kB
    where = ["parent", parent] if parent else ["root"]
    args = ["qdisc", "add", "dev", dev, *where, "tbf", "rate", f"{int(rate_bps)}bit",
            "burst", str(burst), "latency", "400ms"]
    done = _tc(args, netns)
    if done.returncode != 0:
        raise SweeperError(f"tc {' '.join(args)}: {done.stderr.strip()}")
