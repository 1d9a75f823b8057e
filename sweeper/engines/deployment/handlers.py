"""Flower's HTTP handlers run on the server's event loop, not handed to a thread pool.

FastAPI runs a `def` endpoint (and a `def` dependency) in a worker thread, and so does
Flower's protobuf route for every protobuf handler (`flwr.supercore.protobuf.routing`), and
the SuperLink's node authentication for every Fleet call: a queue, two thread switches and
a wake-up of the event loop per hand-off. Flower's SuperLink and SuperNode Runtime API
handlers are `def`s over in-memory state behind short locks, and node authentication is a
signature check; on the 2 cores of a laptop running a 10-client federation the FastAPI
hand-offs were a fifth of the SuperLink's and SuperNodes' CPU, and with those gone Flower's
own were a quarter of what was left of the SuperLink's (cProfile of a kept federation).
Run where they are called, the same handlers serve one request at a time, which is how the
GIL ran them anyway. What may wait on the outside stays in its thread: the streaming of a
response (the log streams sleep between looks), Flower's event-log, license and account
plugins, its Responses API, Starlette's file responses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweeper.engines.deployment.hooks import patched_module

# the modules whose `run_in_threadpool` calls a handler (or node authentication)
HANDLER_CALLERS = ("fastapi.routing", "fastapi.dependencies.utils",
                   "flwr.supercore.protobuf.routing")
NODE_AUTHENTICATION = "flwr.superlink.routers.fleet.node_auth"


async def _in_place(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def run_handlers_in_place(*more_callers: str) -> None:
    """In this process, have FastAPI and Flower call `def` handlers directly (and what
    `more_callers`, module names, hand to a thread)."""
    for name in (*HANDLER_CALLERS, *more_callers):
        patched_module(name, "run_in_threadpool").run_in_threadpool = _in_place
