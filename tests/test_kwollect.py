"""Kwollect node energy: the metric chosen per node from the reference API, integration by
what a sample stands for, and NaN with a reason (never 0) when the samples do not cover the
window; against the Grid'5000 API stand-in (see g5k_fakes)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from g5k_fakes import PASSWORD, REFERENCE_CLUSTERS, USER, FakeG5kApi

from g5k.api import Api
from g5k.credentials import Credentials
from g5k.kwollect import PowerMetric, node_metric, series, window_energy
from g5k.trial_energy import KwollectNodeEnergy

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
WATTMETRE = PowerMetric("wattmetre_power_watt", 1.0)
PDU = PowerMetric("pdu_outlet_power_watt", 1.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sample(node: str, seconds: float, watts: float, metric: str = "wattmetre_power_watt"):
    labels = {"_device_orig": [f"wattmetre1-port{node.rsplit('-', 1)[1]}"]} \
        if metric == "wattmetre_power_watt" else {}
    return {"timestamp": at(seconds).isoformat(), "device_id": node, "metric_id": metric,
            "value": watts, "labels": labels}


def energy(samples: list[dict], metric: PowerMetric, lo: float, hi: float, node="gros-41"):
    points = series(samples, metric.name).get(node, [])
    return window_energy(node, points, metric, (at(lo), at(hi)))


@pytest.fixture
def reference():
    """A stand-in whose reference API lists the clusters' metrics as Grid'5000's does."""
    servers: list[FakeG5kApi] = []

    def start(samples: list[dict]) -> tuple[FakeG5kApi, KwollectNodeEnergy]:
        server = FakeG5kApi([], samples, clusters=REFERENCE_CLUSTERS)
        servers.append(server)
        api = Api(server.url, Credentials(USER, PASSWORD))
        return server, KwollectNodeEnergy(api, "nancy", lag_s=0.3, poll_s=0.05)

    yield start
    for server in servers:
        server.close()


def test_metric_per_node_honours_only_for_and_period(reference) -> None:
    server, source = reference([])
    chosen = source.node_metrics(["gros-41", "gros-76", "gros-12", "gros-77", "parasilo-5",
                                  "parasilo-25", "grdix-1"])
    assert chosen["gros-41"] == (PowerMetric("wattmetre_power_watt", 1.0), "")
    assert chosen["gros-76"][0] == PowerMetric("wattmetre_power_watt", 1.0)
    # gros-12 and gros-77 are not in the wattmetre's only_for: the PDU outlet comes next
    assert chosen["gros-12"][0] == PowerMetric("pdu_outlet_power_watt", 1.0)
    assert chosen["gros-77"][0] == PowerMetric("pdu_outlet_power_watt", 1.0)
    assert chosen["parasilo-5"][0] == PowerMetric("pdu_outlet_power_watt", 1.0)
    assert chosen["parasilo-25"][0] == PowerMetric("bmc_node_power_watt", 5.0)
    metric, why = chosen["grdix-1"]  # its only power metric has period 0: on demand only
    assert metric is None and "grdix-1" in why and "period 0" in why
    asked = [path for _, path, _ in server.requests if "/clusters/" in path]
    assert len(asked) == 3  # one reference-API read per cluster
    # a wattmetre listed with period 0 is skipped, whatever its rank
    entries = [{"name": "wattmetre_power_watt", "period": 0, "optional_period": 20},
               {"name": "bmc_node_power_watt", "period": 5000}]
    assert node_metric(entries, "x-1") == (PowerMetric("bmc_node_power_watt", 5.0), "")


def test_wattmetre_samples_are_steps() -> None:
    # a constant 100 W for a 10 s window: 1000 J, the last sample (t=10) outside it
    constant = [sample("gros-41", t, 100) for t in range(-1, 12)]
    flat = energy(constant, WATTMETRE, 0, 10)
    assert flat.joules == pytest.approx(1000.0) and flat.coverage == pytest.approx(1.0)
    # a step 100 -> 200 W at t=5: 5 s x 100 + 5 s x 200 (a trapezoid would say 1550)
    step = [sample("gros-41", t, 100 if t < 5 else 200) for t in range(0, 12)]
    assert energy(step, WATTMETRE, 0, 10).joules == pytest.approx(1500.0)
    # prorated at the edges: 4.5 s x 100 + 4.5 s x 200
    assert energy(step, WATTMETRE, 0.5, 9.5).joules == pytest.approx(1350.0)
    # the same samples as a PDU's instantaneous readings: trapezoid, 4 x 100 + 150 + 5 x 200
    pdu = [dict(s, metric_id="pdu_outlet_power_watt") for s in step]
    assert energy(pdu, PDU, 0, 10).joules == pytest.approx(1550.0)


def test_bmc_samples_five_seconds_apart_integrate(reference) -> None:
    """BMC readings every 5.3 s (a fixed 5 s gap limit dropped every segment: 0 J). The
    power is linear in time, 100 + 2t W, so the trapezoid is exact: over 0..30 s,
    100 x 30 + 30^2 = 3900 J."""
    samples = [sample("parasilo-25", t, 100 + 2 * t, "bmc_node_power_watt")
               for t in (-3 + 5.3 * k for k in range(10))]
    _, source = reference(samples)
    got = source(["parasilo-25.rennes.grid5000.fr"], at(0), at(30))
    assert got["joules"] == pytest.approx(3900.0)
    assert got["metric"] == "bmc_node_power_watt" and "trapezoid" in got["meter"]
    assert got["coverage"] == {"parasilo-25": pytest.approx(1.0)}
    assert "reason" not in got
    # the limit is two periods (10 s): an 11 s gap is not bridged
    gap = [sample("parasilo-25", t, 100, "bmc_node_power_watt") for t in (0, 5, 16, 21)]
    bridged = energy(gap, PowerMetric("bmc_node_power_watt", 5.0), 0, 21, "parasilo-25")
    assert bridged.covered_s == pytest.approx(10.0)


def test_a_node_without_samples_or_metric_is_nan_never_zero(reference) -> None:
    samples = [sample("gros-12", t, 150, "pdu_outlet_power_watt") for t in range(-2, 13)]
    server, source = reference(samples)  # none for gros-41
    got = source(["gros-41", "gros-12", "grdix-1"], at(0), at(10))
    assert math.isnan(got["joules"])
    assert math.isnan(got["joules_by_node"]["gros-41"])
    assert got["joules_by_node"]["gros-12"] == pytest.approx(1500.0)
    assert math.isnan(got["joules_by_node"]["grdix-1"])
    assert "gros-41: no wattmetre_power_watt sample covers the window" in got["reason"]
    assert "grdix-1: no node power metric" in got["reason"]
    assert got["coverage"] == {"gros-41": 0.0, "gros-12": pytest.approx(1.0), "grdix-1": 0.0}
    assert got["metric_by_node"] == {"gros-41": "wattmetre_power_watt",
                                     "gros-12": "pdu_outlet_power_watt", "grdix-1": None}
    # each metric asked for the nodes it stands for only
    asked = [path for _, path, _ in server.requests if "/metrics?" in path]
    assert any("nodes=gros-41&metrics=wattmetre_power_watt" in p for p in asked)
    assert any("nodes=gros-12&metrics=pdu_outlet_power_watt" in p for p in asked)


def test_partial_coverage(reference) -> None:
    # samples for 0..3 s of a 10 s window: 4 s covered (each holds its second)
    short = energy([sample("gros-42", t, 100) for t in range(4)], WATTMETRE, 0, 10, "gros-42")
    assert short.coverage == pytest.approx(0.4) and math.isnan(short.joules)
    assert short.reason == ("gros-42: 40% of the window covered by wattmetre_power_watt "
                            "samples (minimum 90%)")
    # one missing sample (t=4) is bridged by the one before: 1450 - 140 + 130
    one = [sample("gros-41", t, 100 + 10 * t) for t in range(12) if t != 4]
    bridged = energy(one, WATTMETRE, 0, 10)
    assert bridged.joules == pytest.approx(1440.0) and bridged.coverage == pytest.approx(1.0)
    # two missing (t=3, 4) are not: [3, 5) uncovered, 80% < 90%
    two = [sample("gros-41", t, 100) for t in range(12) if t not in (3, 4)]
    assert energy(two, WATTMETRE, 0, 10).coverage == pytest.approx(0.8)
    assert math.isnan(energy(two, WATTMETRE, 0, 10).joules)
    # over 20 s the same hole is 90% coverage: the 2 s filled at the mean covered power,
    # (8 x 100 + 10 x 200) J over 18 s -> 2800 x 20 / 18
    samples = [sample("gros-41", t, 100 if t < 10 else 200) for t in range(22)
               if t not in (3, 4)]
    _, source = reference(samples)
    got = source(["gros-41"], at(0), at(20))
    assert got["joules"] == pytest.approx(2800 * 20 / 18)
    assert got["coverage"] == {"gros-41": pytest.approx(0.9)}
    assert got["filled_s"] == {"gros-41": pytest.approx(2.0)}
    assert "gros-41: 2.0 s (10.0%) filled at mean power" in got["meter"]
    assert "reason" not in got
