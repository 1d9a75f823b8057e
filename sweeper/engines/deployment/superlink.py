"""`flower-superlink`, its middlewares in one layer, each for the requests it acts on
(`middleware.py`), its routes tried busiest first (`routes.py`), its handlers run on its
event loop (`handlers.py`)."""

from __future__ import annotations

import sys

from sweeper.engines.deployment.handlers import run_handlers_in_place
from sweeper.engines.deployment.middleware import streamlined
from sweeper.engines.deployment.routes import busiest_first


def patch(main) -> None:
    """Streamline the middlewares and routes of the app `flwr.superlink.main` (`main`)
    makes."""
    missing = [name for name in ("_get_middleware", "create_app") if not hasattr(main, name)]
    if missing:
        raise RuntimeError(f"flwr.superlink.main has no {missing}: sweeper's SuperLink "
                           "launcher needs updating for this Flower")
    flowers, app_of = main._get_middleware, main.create_app

    def create_app(*args, **kwargs):
        app = app_of(*args, **kwargs)
        busiest_first(app)
        return app

    main._get_middleware = lambda: streamlined(flowers())
    main.create_app = create_app


def main() -> None:
    import flwr.superlink.main as superlink_main
    from flwr.superlink.cli import flower_superlink

    patch(superlink_main)
    run_handlers_in_place()
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
