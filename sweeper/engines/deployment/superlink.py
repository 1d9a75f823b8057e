"""`flower-superlink`, its middlewares scoped to the requests they act on (`middleware.py`)."""

from __future__ import annotations

import sys

from sweeper.engines.deployment.middleware import scoped


def patch(main) -> None:
    """Scope the middlewares `flwr.superlink.main` (`main`) gives its app."""
    if not hasattr(main, "_get_middleware"):
        raise RuntimeError("flwr.superlink.main has no _get_middleware: sweeper's "
                           "SuperLink launcher needs updating for this Flower")
    flowers = main._get_middleware
    main._get_middleware = lambda: scoped(flowers())


def main() -> None:
    import flwr.superlink.main as superlink_main
    from flwr.superlink.cli import flower_superlink

    patch(superlink_main)
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
