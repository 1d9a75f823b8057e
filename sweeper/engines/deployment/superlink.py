"""`flower-superlink`, its app streamlined (`http_app.py`)."""

from __future__ import annotations

import sys

from sweeper.engines.deployment.handlers import NODE_AUTHENTICATION
from sweeper.engines.deployment.http_app import streamlining


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
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
