"""Flower's telemetry events not built when telemetry is off.

`flwr.supercore.telemetry.event` builds each event's payload (a source id file read, and
`platform.architecture()`, which runs `file` on the interpreter in a child process) before
it looks at `FLWR_TELEMETRY_ENABLED`, and only then sends nothing. Every ClientApp task
emits two events: cProfile put 9 ms of each task there, a tenth of its Flower overhead.
With telemetry off and its logging off (sweeper's processes run with
`FLWR_TELEMETRY_ENABLED=0`), an event is answered "disabled" at once, which is what Flower
answers after building it. With either on, Flower's own `create_event` runs.
"""

from __future__ import annotations

from sweeper.engines.deployment.hooks import patched_module

MODULE = "flwr.supercore.telemetry"


def _disabled(*_args, **_kwargs) -> str:
    return "disabled"


def no_events_when_off() -> None:
    """In this process (and its forks): skip building events that would not be sent."""
    telemetry = patched_module(MODULE, "create_event", "FLWR_TELEMETRY_ENABLED",
                               "FLWR_TELEMETRY_LOGGING")
    if telemetry.FLWR_TELEMETRY_ENABLED != "1" and telemetry.FLWR_TELEMETRY_LOGGING != "1":
        telemetry.create_event = _disabled
