"""The deployment engine with each SuperNode in its own network namespace: bytes measured on
each client's veth against the codec's accounting, and shaped links (needs root and
iproute2; skipped with the reason otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_deployment import flower_processes, tiny_config

from sweeper.config import TrialConfig
from sweeper.energy import load_profiles
from sweeper.engines.deployment import netns
from sweeper.engines.deployment.kept import KEPT
from sweeper.engines.deployment.netns import LinkShape
from sweeper.result import TrialResult
from sweeper.trial import run_trial

# A cell-edge link, slow enough that transfers outlast noise, beside the built-in ethernet.
EDGE_MBPS = 0.1
EDGE_PROFILE = f"""
networks:
  cell_edge:
    j_per_byte_up: 3.5e-06
    j_per_byte_down: 4.2e-07
    source: a test profile, not a measurement
    link: {{up_mbps: {EDGE_MBPS}, down_mbps: {EDGE_MBPS}}}
    link_source: a test profile, not a measurement
"""

pytestmark = [pytest.mark.skipif(netns.unavailable() is not None,
                                 reason=str(netns.unavailable())),
              pytest.mark.slow]  # ~2.5 min: three deployments, one over a 0.1 Mbps link


def _config(engine: str, profile: str, width: float, **scenario) -> TrialConfig:
    config = tiny_config(engine, network_profile=profile, num_clients=2, rounds=1, **scenario)
    config.leverages.update(update_codec="none", width=width)
    return config


def _run(profile: str, width: float) -> TrialResult:
    config = _config("deployment", profile, width, deploy_network="netns")
    result = run_trial(config)
    assert result.status == "ok", result.reason
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrialResult]:
    before = flower_processes()
    profiles = tmp_path_factory.mktemp("profiles") / "edge.yaml"
    profiles.write_text(EDGE_PROFILE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWEEPER_PROFILES", str(profiles))
        load_profiles.cache_clear()
        try:
            out = {"small": _run("ethernet", 1.0), "large": _run("ethernet", 2.0),
                   "slow": _run("cell_edge", 1.0)}
        finally:
            load_profiles.cache_clear()
    KEPT.close()  # the last trial's federation, kept for a next trial
    out["left"] = flower_processes() - before
    for name in ("small", "large", "slow"):  # shown with -s: the protocol overhead measured
        print(name, out[name].rounds[0].wall_s, out[name].info["wire"])
    return out


def test_shaped_deployment_learns_as_the_simulation_does(runs) -> None:
    simulated = run_trial(_config("simulation", "ethernet", 1.0))
    assert simulated.status == "ok", simulated.reason
    assert abs(runs["small"].accuracy - simulated.accuracy) <= 0.02
    assert abs(runs["small"].rounds[0].bytes_up - simulated.rounds[0].bytes_up) <= 64 * 2


def test_measured_bytes_are_accounting_plus_protocol_overhead(runs) -> None:
    """The overhead (HTTP headers of every request, one per object of a message; TCP/IP and
    Ethernet headers; polls and heartbeats) is taken from one run and predicts the wire
    bytes of a run whose messages are 3.5x larger (same arrays, twice the channels) to
    within 10%."""
    small, large = runs["small"].info["wire"], runs["large"].info["wire"]
    for direction in ("up", "down"):
        assert small[f"overhead_{direction}_bytes"] > 0  # the wire carries more than payload
        predicted = large[f"accounted_{direction}_bytes"] + small[f"overhead_{direction}_bytes"]
        assert large[f"wire_{direction}_bytes"] == pytest.approx(predicted, rel=0.10)
    assert large["accounted_up_bytes"] > 3 * small["accounted_up_bytes"]
    # The communication energy is priced on the measured bytes.
    assert runs["small"].meters["communication_j"].meter.startswith("wire_bytes")
    per_client = runs["small"].info["wire_by_client"][1]
    assert set(per_client) == {"0", "1"}
    assert all(v["up_bytes"] > 0 and v["down_bytes"] > 0 for v in per_client.values())


def test_a_slower_link_gives_a_longer_round(runs) -> None:
    fast, slow = runs["small"], runs["slow"]
    wire = max(slow.info["wire_by_client"][1].values(), key=lambda v: v["down_bytes"])
    transfer_s = 8 * (wire["up_bytes"] + wire["down_bytes"]) / (EDGE_MBPS * 1e6)
    assert transfer_s > 15
    # Transfers overlap with the other client's and with CPU work, and the machine is
    # shared: a quarter of the slowest client's transfer time is a safe margin.
    assert slow.rounds[0].wall_s > fast.rounds[0].wall_s + 0.25 * transfer_s


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_namespaces_links_and_processes_are_removed(runs) -> None:
    # Only this process's: other trials (another checkout's tests) may share the machine.
    assert not runs["left"]
    assert f"-{netns.owner_tag()}-" not in _namespaces()


STALE = """
import os, signal
from sweeper.engines.deployment.netns import LinkShape, Network
network = Network(2, LinkShape(up_mbps=40.0, down_mbps=80.0)).__enter__()
print(network.clients[0].netns[:-len("c0")], flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no exit handler runs
"""


def test_a_killed_trials_namespaces_are_removed_by_the_next() -> None:
    killed = subprocess.run([sys.executable, "-c", STALE], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    stale = killed.stdout.split()[0]  # sweeper-<index>-<owner pid.start time>-
    assert stale in _namespaces()
    with netns.Network(1, LinkShape(up_mbps=6.0, down_mbps=13.0)):
        assert stale not in _namespaces()
    assert stale not in _namespaces() and f"-{netns.owner_tag()}-" not in _namespaces()
