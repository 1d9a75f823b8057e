"""The modeled ledger, checked against numbers computed by hand."""

from __future__ import annotations

import pytest

from sweeper.energy import RoundUsage, modeled_ledger
from sweeper.energy.profiles import (
    HostProfile,
    LinkShape,
    NetworkProfile,
    link_shape,
    load_profiles,
)
from sweeper.errors import SweeperError


def test_modeled_energy_is_exact_by_hand() -> None:
    host = HostProfile("h", watts_per_core=5.0, source="test")
    net = NetworkProfile("n", j_per_byte_up=2e-6, j_per_byte_down=1e-6, source="test")
    ledger = modeled_ledger(host, net)
    first = ledger.add_round(RoundUsage(client_cpu_s=3.0, server_cpu_s=0.5,
                                        bytes_up=1_000_000, bytes_down=2_000_000))
    assert first == pytest.approx({"client_compute_j": 15.0, "server_compute_j": 2.5,
                                   "communication_j": 2.0 + 2.0})
    second = ledger.add_round(RoundUsage(client_cpu_s=1.0, server_cpu_s=0.0, bytes_up=0,
                                         bytes_down=1_000_000))
    assert second == pytest.approx({"client_compute_j": 20.0, "server_compute_j": 2.5,
                                    "communication_j": 5.0})
    assert ledger.total_j == pytest.approx(27.5)
    provenance = ledger.provenance()
    assert {info.kind for info in provenance.values()} == {"modeled"}
    assert "5.0 W/core" in provenance["client_compute_j"].meter


def test_every_builtin_profile_cites_a_source() -> None:
    profiles = load_profiles()
    assert profiles.hosts and profiles.networks
    for profile in [*profiles.hosts.values(), *profiles.networks.values()]:
        assert len(profile.source) > 20, profile


def test_user_profiles_extend_the_builtin_ones_and_bad_keys_are_named(tmp_path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text("networks:\n  lab_ethernet:\n    j_per_byte_up: 1.0e-8\n"
                    "    j_per_byte_down: 1.0e-8\n    source: my own wattmeter, 2026\n"
                    "    link: {up_mbps: 1000, rtt_ms: 0.2}\n    link_source: iperf3 on the lab\n")
    profiles = load_profiles(str(good))
    assert profiles.networks["lab_ethernet"].link == {"up_mbps": 1000.0, "rtt_ms": 0.2}
    assert link_shape("lte") == LinkShape(up_mbps=6.0, down_mbps=13.0)  # Huang et al. 2012
    with pytest.raises(SweeperError, match=r"'wifi' has no link shape.*SWEEPER_PROFILES"):
        link_shape("wifi")
    assert "raspberry_pi_4" in profiles.devices  # built-ins stay
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("rtt_ms", "latency"))
    with pytest.raises(SweeperError, match=r"bad.yaml.*networks.lab_ethernet.link.*'latency'"):
        load_profiles(str(bad))


def test_builtin_devices_and_links_cite_their_sources() -> None:
    profiles = load_profiles()
    for device in profiles.devices.values():
        assert len(device.source) > 20 and set(device.j_per_flop) == {"fp32", "fp16", "bf16"}
    for network in profiles.networks.values():
        assert not network.link or len(network.link_source) > 20
    assert profiles.devices["raspberry_pi_4"].idle_w == 2.7
