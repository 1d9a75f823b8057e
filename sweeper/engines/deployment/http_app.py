"""Flower's FastAPI apps (the SuperLink's, a SuperNode's Runtime API) at less Python per
request, with the same answers: their middlewares fused into one layer, each run only for
the requests it acts on (`middleware.py`); their routes tried busiest first (`routes.py`);
their `def` handlers run on the event loop (`handlers.py`). `tests/test_deployment_http.py`
sends the same requests to Flower's app and to the streamlined one and compares the answers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from sweeper.engines.deployment.handlers import run_handlers_in_place
from sweeper.engines.deployment.middleware import streamlined
from sweeper.engines.deployment.routes import busiest_first


def streamline(app):
    """`app` (a FastAPI app that has not served yet), streamlined in place; returned."""
    app.user_middleware[:] = streamlined(app.user_middleware)
    busiest_first(app)
    return app


def streamlining(create_app: Callable, *more_callers: str) -> Callable:
    """`create_app` whose apps are streamlined, with this process's handlers (and what the
    `more_callers` modules hand to threads: `handlers.py`) run in place."""
    run_handlers_in_place(*more_callers)

    @functools.wraps(create_app)
    def created(*args, **kwargs):
        return streamline(create_app(*args, **kwargs))

    return created
