"""`flower-superlink`, its middlewares in one layer, each for the requests it acts on
(`middleware.py`), its handlers run on its event loop (`handlers.py`)."""

from __future__ import annotations

import sys

from sweeper.engines.deployment.handlers import run_handlers_in_place
from sweeper.engines.deployment.middleware import streamlined


def patch(main) -> None:
    """Streamline the middlewares `flwr.superlink.main` (`main`) gives its app."""
    if not hasattr(main, "_get_middleware"):
        raise RuntimeError("flwr.superlink.main has no _get_middleware: sweeper's "
                           "SuperLink launcher needs updating for this Flower")
    flowers = main._get_middleware
    main._get_middleware = lambda: streamlined(flowers())


def main() -> None:
    import flwr.superlink.main as superlink_main
    from flwr.superlink.cli import flower_superlink

    patch(superlink_main)
    run_handlers_in_place()
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
