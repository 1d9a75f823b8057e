"""Flower's HTTP handlers run on the server's event loop, not handed to a thread pool.

FastAPI runs a `def` endpoint (and a `def` dependency) in a worker thread: a queue, two
thread switches and a wake-up of the event loop per request. Flower's SuperLink and
SuperNode Runtime API endpoints are `def`s over in-memory state behind short locks; on the
2 cores of a laptop running a 10-client federation that hand-off was a fifth of the
SuperLink's and SuperNodes' CPU (three interleaved runs of a kept federation, with and
without). Run where they are called, the same handlers serve one request at a time, which
is how the GIL ran them anyway. Only the two call sites of FastAPI's request path are
changed; nothing else that uses a thread pool (Flower's own `run_in_threadpool` calls, the
streaming of a response, Starlette's file responses) is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


async def _in_place(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def run_handlers_in_place() -> None:
    """In this process, have FastAPI call `def` endpoints and dependencies directly."""
    import fastapi.dependencies.utils
    import fastapi.routing

    for module in (fastapi.routing, fastapi.dependencies.utils):
        if not hasattr(module, "run_in_threadpool"):
            raise RuntimeError(f"{module.__name__} has no run_in_threadpool: sweeper's "
                               "Flower launchers need updating for this FastAPI")
        module.run_in_threadpool = _in_place
