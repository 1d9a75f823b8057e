"""Who may reach a deployment's SuperLink (real flower-superlink / flower-supernode
processes, on this machine): with TLS and SuperNode authentication, as under
`deploy_placement: ray`, a client without the trial's CA and a SuperNode with a key that
was not registered are refused, and only the Fleet API is served off loopback."""

from __future__ import annotations

import shutil
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import ray
from flwr.proto.control_pb2 import ListNodesRequest, ListRunsRequest  # pylint: disable=E0611

from sweeper.engines.deployment import federation as deployment
from sweeper.engines.deployment.processes import Processes, free_port
from sweeper.engines.deployment.tls import make_credentials

JOIN_TIMEOUT_S = 120.0


@dataclass
class Probed:
    link: deployment.Link
    procs: Processes
    home: Path
    fresh_public_key: bytes  # the unregistered SuperNode's
    nodes: dict[bytes, str]  # public key -> status, as the Control API lists them


def _supernode(link: deployment.Link, ca: Path | None, key: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "flower-supernode"),  # Flower's own
            *(["--root-certificates", str(ca)] if ca else []),
            "--auth-supernode-private-key", str(key), "--superlink", link.fleet,
            "--isolation", "process", "--host", deployment.HOST, "--port", str(free_port())]


@pytest.fixture(scope="module")
def probed() -> Probed:
    """A SuperLink with TLS and two registered SuperNode keys, its Fleet API at this node's
    address (as for Ray-placed SuperNodes), and three SuperNodes pointed at it: one as the
    trial starts them, one without the trial's CA, one with a key never registered. Waits
    (bounded) until the first is online and the other two have given up."""
    home = Path(tempfile.mkdtemp(prefix="sweeper-auth-test-"))
    procs = Processes(home)
    env = deployment._env(home)
    try:
        link = deployment.start_link(home, procs, env, ray.util.get_node_ip_address(),
                                     tls=True, auth=True, nodes=2)
        fresh = make_credentials(home / "stranger", [deployment.HOST], 1)
        procs.start("member", _supernode(link, link.creds.ca, link.creds.node_keys[0]),
                    env)
        procs.start("no-ca", _supernode(link, None, link.creds.node_keys[1]), env)
        procs.start("stranger", _supernode(link, link.creds.ca, fresh.node_keys[0]),
                    env)
        control = deployment._control(link.control, link.creds.ca)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        try:
            while True:
                nodes = {n.public_key: n.status
                         for n in control.ListNodes(ListNodesRequest()).nodes_info}
                gave_up = all(procs.procs[n].poll() is not None for n in ("no-ca", "stranger"))
                if nodes.get(link.creds.node_public_keys[0]) == "online" and gave_up:
                    break
                assert time.monotonic() < deadline, f"not settled: {nodes}, {procs.exited()}"
                time.sleep(0.5)
        finally:
            control.close()
        yield Probed(link, procs, home, fresh.node_public_keys[0], nodes)
    finally:
        procs.close()
        shutil.rmtree(home, ignore_errors=True)


def _log(probe: Probed, name: str) -> str:
    return (probe.home / f"{name}.log").read_text(errors="replace")


def test_a_registered_supernode_with_the_trials_ca_joins(probed: Probed) -> None:
    """The control for the refusals below: the same SuperLink admits the trial's own."""
    assert probed.nodes[probed.link.creds.node_public_keys[0]] == "online"
    assert probed.procs.procs["member"].poll() is None


def test_a_client_without_the_trials_ca_is_refused(probed: Probed) -> None:
    host, port = probed.link.fleet.rsplit(":", 1)
    with (socket.create_connection((host, int(port)), timeout=10) as raw,
          pytest.raises(ssl.SSLCertVerificationError)):
        ssl.create_default_context().wrap_socket(raw, server_hostname=host)  # system CAs
    assert probed.procs.procs["no-ca"].poll() != 0
    assert "CERTIFICATE_VERIFY_FAILED" in _log(probed, "no-ca")
    # Its key is registered, but it never got through to use it.
    assert probed.nodes[probed.link.creds.node_public_keys[1]] == "registered"


def test_an_unregistered_supernode_key_is_refused(probed: Probed) -> None:
    assert probed.procs.procs["stranger"].poll() != 0
    assert "Failed to activate SuperNode" in _log(probed, "stranger")
    assert probed.fresh_public_key not in probed.nodes
    assert set(probed.nodes) == set(probed.link.creds.node_public_keys)


def _listening_on(pid: int) -> set[tuple[str, int]]:
    """(IPv4 address, port) of every TCP socket process `pid` listens on."""
    fds = Path(f"/proc/{pid}/fd")
    inodes = {fd.readlink().name[len("socket:["):-1] for fd in fds.iterdir()
              if fd.readlink().name.startswith("socket:[")}
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:
            address, port = fields[1].split(":")
            found.add((socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)))
    for line in Path("/proc/net/tcp6").read_text().splitlines()[1:]:
        assert line.split()[9] not in inodes, "an IPv6 listening socket"
    return found


def test_only_the_fleet_api_is_served_off_loopback(probed: Probed) -> None:
    link = probed.link
    node = ray.util.get_node_ip_address()
    if node == deployment.HOST:
        pytest.skip("this machine has no address but loopback")
    control_port = int(link.control.rsplit(":", 1)[1])
    superlink = probed.procs.procs["superlink-0"]
    assert _listening_on(superlink.pid) == {(deployment.HOST, control_port)}
    gateway = probed.procs.procs["fleet-gateway-0"]
    fleet_host, fleet_port = link.fleet.rsplit(":", 1)
    assert fleet_host == node
    assert _listening_on(gateway.pid) == {(node, int(fleet_port))}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((node, control_port), timeout=10).close()

    # The Control API answers on loopback, not through the Fleet API's address, however
    # the path is spelled.
    control = deployment._control(link.control, link.creds.ca)
    try:
        control.ListRuns(ListRunsRequest())
    finally:
        control.close()
    through_fleet = deployment._control(link.fleet, link.creds.ca)
    try:
        with pytest.raises(httpx.HTTPStatusError) as refused:
            through_fleet.ListRuns(ListRunsRequest())
        assert refused.value.response.status_code == 404
    finally:
        through_fleet.close()
    # Sent as written (an HTTP client would resolve the dots before sending).
    for path in ("/v1/fleet/../control/list-runs", "/v1/fleet/%2e%2e/control/list-runs",
                 "/v1/fleet/get-run/../../control/list-runs", "/v1/runtime/get-run"):
        assert _status(link.fleet, path, link.creds.ca) == 404, path


def _status(address: str, path: str, ca: Path) -> int:
    """The status of a bodiless POST of `path`, its bytes sent as they are."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    with (socket.create_connection((host, int(port)), timeout=30) as raw,
          context.wrap_socket(raw, server_hostname=host) as tls):
        tls.sendall(f"POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n"
                    "Connection: close\r\n\r\n".encode())
        return int(tls.recv(64).split()[1])


def test_a_supernode_that_fails_to_start_leaves_no_key_behind(ray_cluster,
                                                              tmp_path: Path) -> None:
    """A Ray-placed SuperNode that exits at start: the start fails with its name, and its
    actor has deleted the credentials it was handed (written owner-only meanwhile)."""
    from sweeper.engines.deployment.ray_nodes import RaySuperNodes

    seen = tmp_path / "seen"

    def commands(partition: int, port: int, ca: Path | None, key: Path | None
                 ) -> list[tuple[str, list[str]]]:
        modes = [oct(p.stat().st_mode & 0o777) for p in (key.parent, ca, key)]
        seen.write_text(" ".join([str(key.parent), *modes]))
        return [(f"supernode-{partition}", ["sh", "-c", "exit 3"])]

    with pytest.raises(Exception, match=r"supernode-0 on .*exited with code 3"):
        RaySuperNodes(1, commands, {}, b"not a CA", [b"not a key"])
    directory, *modes = seen.read_text().split()
    assert modes == ["0o700", "0o600", "0o600"]
    assert not Path(directory).exists()
