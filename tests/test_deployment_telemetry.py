"""`telemetry.no_events_when_off`: Flower's events are not built when they would not be
sent, and are built as before when telemetry or its logging is on."""

from __future__ import annotations

import platform

import flwr.supercore.telemetry as flower_telemetry
import pytest

from sweeper.engines.deployment.telemetry import no_events_when_off


@pytest.fixture
def counted_architecture(monkeypatch):
    """Flower's own `create_event` restored after the test; calls of
    `platform.architecture` (which runs `file` in a child process) counted."""
    monkeypatch.setattr(flower_telemetry, "create_event", flower_telemetry.create_event)
    calls = []
    architecture = platform.architecture
    monkeypatch.setattr(platform, "architecture",
                        lambda *a, **k: calls.append(1) or architecture(*a, **k))
    return calls


def test_an_event_is_not_built_when_telemetry_is_off(monkeypatch, counted_architecture):
    monkeypatch.setattr(flower_telemetry, "FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setattr(flower_telemetry, "FLWR_TELEMETRY_LOGGING", "0")
    no_events_when_off()
    event = flower_telemetry.event(flower_telemetry.EventType.FLWR_CLIENTAPP_RUN_ENTER)
    assert event.result(timeout=5) == "disabled"
    assert counted_architecture == []


def test_flowers_events_stay_when_telemetry_logs(monkeypatch, counted_architecture):
    monkeypatch.setattr(flower_telemetry, "FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setattr(flower_telemetry, "FLWR_TELEMETRY_LOGGING", "1")
    no_events_when_off()
    event = flower_telemetry.event(flower_telemetry.EventType.FLWR_CLIENTAPP_RUN_ENTER)
    assert event.result(timeout=30) == "disabled"  # built and logged, then not sent
    assert counted_architecture == [1]
