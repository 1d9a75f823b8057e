"""Energy sources: RAPL on a powercap-shaped tree, Zeus fallback, FLOPs, device profiles,
carbon, and the measured path of a real trial in `isolation: node` mode."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from sweeper.config import Scenario, TrialConfig, resolve_leverages
from sweeper.energy import RoundUsage, co2_g, measured_node_ledger, modeled_ledger
from sweeper.energy.node import open_node_meter
from sweeper.energy.profiles import (
    CarbonIntensity,
    DeviceProfile,
    HostProfile,
    NetworkProfile,
    load_profiles,
)
from sweeper.energy.rapl import PowercapRapl, RaplUnavailable
from sweeper.energy.windows import attributed_j, machine_busy_cpu_s
from sweeper.kws.models import training_flops_per_example
from sweeper.result import TrialResult
from sweeper.trial import run_trial

MAX_UJ = 262_143_328_850


def powercap_tree(root: Path, package_uj: int = 1_000, dram_uj: int = 500) -> Path:
    """One package zone with a DRAM subzone, as the kernel lays them out."""
    package = root / "intel-rapl:0"
    dram = package / "intel-rapl:0:0"
    dram.mkdir(parents=True)
    for zone, name, value in ((package, "package-0", package_uj), (dram, "dram", dram_uj)):
        (zone / "name").write_text(name + "\n")
        (zone / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
        (zone / "energy_uj").write_text(f"{value}\n")
    return package


def test_rapl_reads_package_and_dram_and_handles_a_wrap(tmp_path: Path) -> None:
    package = powercap_tree(tmp_path, package_uj=MAX_UJ - 2_000_000, dram_uj=10_000_000)
    rapl = PowercapRapl(tmp_path)
    assert [z.name for z in rapl.zones] == ["package-0", "package-0/dram"]
    before = rapl.read()
    (package / "energy_uj").write_text("3000000\n")  # wrapped: 2 J to the top, then 3 J
    (package / "intel-rapl:0:0" / "energy_uj").write_text("12500000\n")
    assert rapl.joules_since(before, rapl.read()) == pytest.approx(
        {"package-0": 5.0, "package-0/dram": 2.5})


def test_rapl_unavailable_says_why(tmp_path: Path) -> None:
    with pytest.raises(RaplUnavailable, match="no RAPL zones"):
        PowercapRapl(tmp_path)
    package = powercap_tree(tmp_path)
    (package / "energy_uj").unlink()
    (package / "energy_uj").mkdir()  # unreadable as a counter (tests run as root)
    with pytest.raises(RaplUnavailable, match="unreadable"):
        PowercapRapl(tmp_path)


def test_zeus_falls_back_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWEEPER_POWERCAP_ROOT", str(tmp_path / "none"))
    meter, reasons = open_node_meter("auto")
    assert meter is None
    assert reasons[0].startswith("zeus:") and reasons[1].startswith("rapl:")
    powercap_tree(tmp_path / "rapl")
    monkeypatch.setenv("SWEEPER_POWERCAP_ROOT", str(tmp_path / "rapl"))
    meter, reasons = open_node_meter("zeus, rapl")  # an explicit list, in order
    assert meter is not None and meter.name.startswith("rapl-powercap")
    assert reasons[0].startswith("zeus:")


def test_training_flops_of_a_linear_layer_by_hand() -> None:
    # forward x @ W^T: 2*in*out; backward: the weight's gradient, 2*in*out. The input needs
    # no gradient, so there is no third matmul (a counter, not the 3x rule of thumb).
    assert training_flops_per_example(torch.nn.Linear(510, 12), (510,), 12) == 2 * 2 * 510 * 12
    two_layers = torch.nn.Sequential(torch.nn.Linear(510, 64), torch.nn.Linear(64, 12))
    assert training_flops_per_example(two_layers, (510,), 12) == (
        2 * 2 * 510 * 64 + 3 * 2 * 64 * 12)  # the second layer also passes a gradient back


def test_device_and_carbon_models_are_exact_by_hand() -> None:
    host = HostProfile("h", 5.0, "test")
    net = NetworkProfile("n", 1e-6, 1e-6, "test")
    device = DeviceProfile("d", {"fp32": 2e-11, "bf16": 1e-11, "fp16": 1e-11}, "test")
    ledger = modeled_ledger(host, net, device, "bf16")
    energy = ledger.add_round(RoundUsage(client_cpu_s=100.0, server_cpu_s=1.0, bytes_up=0,
                                         bytes_down=1_000_000, client_flops=3e12))
    assert energy == pytest.approx({"client_compute_j": 30.0, "server_compute_j": 5.0,
                                    "communication_j": 1.0})
    assert "device 'd'" in ledger.provenance()["client_compute_j"].meter
    assert co2_g(3.6e6, CarbonIntensity("x", 32.0, "test")) == pytest.approx(32.0)
    assert load_profiles().carbon["fr"].g_per_kwh == 32


def test_node_energy_splits_into_active_and_idle_by_hand() -> None:
    net = NetworkProfile("n", j_per_byte_up=0.0, j_per_byte_down=1e-6, source="test")
    ledger = measured_node_ledger("m", net, idle_w=10.0, idle_probe_s=1.0)
    usage = RoundUsage(client_cpu_s=0.0, server_cpu_s=0.0, bytes_up=0, bytes_down=1_000_000,
                       node_j={"package-0": 80.0, "dram": 20.0}, wall_s=4.0)
    assert ledger.add_round(usage) == pytest.approx(
        {"node_compute_j": 60.0, "idle_j": 40.0, "communication_j": 1.0})
    quiet = RoundUsage(client_cpu_s=0.0, server_cpu_s=0.0, bytes_up=0, bytes_down=0,
                       node_j={"package-0": 5.0}, wall_s=1.0)
    assert ledger.add_round(quiet)["idle_j"] == pytest.approx(45.0)  # never above the node
    assert ledger.cumulative["node_compute_j"] == pytest.approx(60.0)


@pytest.fixture
def ticking_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A powercap tree whose package counter a thread advances at 1 W (10 mJ every 10 ms),
    through a wrap of the counter."""
    package = powercap_tree(tmp_path, package_uj=MAX_UJ - 50_000)
    monkeypatch.setenv("SWEEPER_POWERCAP_ROOT", str(tmp_path))
    stop = threading.Event()

    def tick() -> None:
        value = MAX_UJ - 50_000
        while not stop.is_set():
            value = (value + 10_000) % MAX_UJ
            fresh = package / "energy_uj.new"  # replaced whole, as sysfs reads never tear
            fresh.write_text(f"{value}\n")
            fresh.replace(package / "energy_uj")
            time.sleep(0.01)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    yield
    stop.set()
    ticker.join()


def _metered_trial(**scenario_fields) -> TrialResult:
    scenario = Scenario(corpus_speakers=8, corpus_takes=2, num_clients=2, rounds=3,
                        meters="rapl", **scenario_fields)
    result = run_trial(TrialConfig(scenario, resolve_leverages({}, scenario), 0))
    assert result.status == "ok", result.reason
    assert result.meters["communication_j"].kind == "modeled"
    return result


def test_measured_node_energy_in_isolation_mode(ticking_package) -> None:
    """A real trial reads the ticking counter around every round: the measured joules
    follow the round's duration, split into the node's idle power and the rest."""
    result = _metered_trial(isolation="node", idle_probe_s=0.3)
    assert result.meters["node_compute_j"].kind == "measured"
    assert result.meters["idle_j"].kind == "measured"
    idle_w = result.info["meter_selection"]["idle_w"]
    assert idle_w == pytest.approx(1.0, rel=0.3)  # the ticker is the node's only load
    node = [r.energy["node_compute_j"] + r.energy["idle_j"] for r in result.rounds]
    assert node == sorted(node) and node[-1] > 0
    total_round_s = sum(r.wall_s for r in result.rounds)
    assert node[-1] == pytest.approx(total_round_s * 1.0, rel=0.5, abs=0.05)
    assert result.rounds[-1].energy["idle_j"] <= idle_w * total_round_s + 1e-9
    assert result.info["meter_selection"]["node_meter"].startswith("rapl-powercap")


def test_shared_node_counters_are_windowed_around_each_client(ticking_package) -> None:
    """Sharing the node, the trial reads the counter only around its clients' work and
    keeps their CPU share of it: measured, no more than the node's energy meanwhile."""
    result = _metered_trial(isolation="shared")
    info = result.meters["client_compute_j"]
    assert info.kind == "measured" and "windowed around each client" in info.meter
    assert result.meters["server_compute_j"].kind == "modeled"
    assert "node_compute_j" not in result.meters
    series = [r.energy["client_compute_j"] for r in result.rounds]
    assert series == sorted(series) and series[-1] > 0
    assert series[-1] <= 1.0 * sum(r.wall_s for r in result.rounds) + 0.05
    assert result.info["meter_selection"]["client_windows"].startswith("rapl-powercap")


def test_cpu_share_attribution_by_hand(tmp_path: Path) -> None:
    assert attributed_j(10.0, process_cpu_s=0.5, machine_cpu_s=2.0) == pytest.approx(2.5)
    assert attributed_j(10.0, process_cpu_s=3.0, machine_cpu_s=2.0) == 10.0  # jiffy rounding
    assert attributed_j(10.0, 0.5, 0.0) == 0.0
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 20 30 1000 50 5 5 10 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    hz = os.sysconf("SC_CLK_TCK")
    assert machine_busy_cpu_s(str(stat)) == pytest.approx((100 + 20 + 30 + 5 + 5 + 10) / hz)
