"""`flower-superlink`, its app streamlined (`http_app.py`), each SuperNode signature
verified once (`node_signatures.py`)."""

from __future__ import annotations

import sys

from sweeper.engines.deployment.handlers import NODE_AUTHENTICATION
from sweeper.engines.deployment.http_app import streamlining
from sweeper.engines.deployment.node_signatures import verify_each_signature_once
from sweeper.engines.deployment.telemetry import no_events_when_off


def patch(main) -> None:
    """Streamline the app `flwr.superlink.main` (`main`) makes, its node authentication
    run in place too."""
    if not hasattr(main, "create_app"):
        raise RuntimeError("flwr.superlink.main has no create_app: sweeper's SuperLink "
                           "launcher needs updating for this Flower")
    main.create_app = streamlining(main.create_app, NODE_AUTHENTICATION)


def main() -> None:
    import flwr.superlink.main as superlink_main
    from flwr.superlink.cli import flower_superlink

    patch(superlink_main)
    verify_each_signature_once()
    no_events_when_off()
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
