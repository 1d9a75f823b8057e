"""Flower's HTTP middlewares in one layer, each run only for the requests it acts on.

Flower 1.41 wraps every request to a SuperLink (nine of them, `flwr.superlink.main.
_get_middleware`) and to a SuperNode's own Runtime API (three) in Starlette
`BaseHTTPMiddleware`s. Each builds a task group, memory streams and a streaming response
around the layer below, whether or not it does anything for that request: py-spy of a kept
10-client federation found 65% of the SuperLink's CPU in that machinery and 2% in the
handlers, and the SuperLink is the deployment engine's bottleneck (one Python process
serving every SuperNode's and the ServerApp's requests).

`streamlined` keeps every middleware's own code and order, but runs them all in one such
layer (`Fused`), and skips a middleware for a request it only passes on (`return await
call_next(request)` in its `dispatch`, as read in Flower 1.41). `acts_on` says, per
middleware class, which requests it acts on; a class not listed (an extension's, or one a
Flower upgrade adds) runs for every request, as before. Nothing that checks or refuses a
request is skipped for a request it checks: node authentication still runs on every Fleet
call, the Control API's authentication on every Control call.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

Scope = dict

CONTROL = "/v1/control/"
FLEET = "/v1/fleet/"
PROTOBUF = b"application/protobuf"


def _under(prefix: str) -> Callable[[Scope], bool]:
    return lambda scope: scope["path"].startswith(prefix)


def _logged_under(prefix: str, plugin: str) -> Callable[[Scope], bool]:
    """Requests under `prefix` when the app has an event log `plugin` (Starlette puts the
    app in the scope; Flower's dispatch reads the plugin from its state)."""
    return lambda scope: (scope["path"].startswith(prefix)
                          and getattr(scope["app"].state, plugin, None) is not None)


def _tracing(scope: Scope) -> bool:
    return os.getenv("FLWR_TRACING_ENABLED") == "1"  # read per request, as Flower does


def acts_on() -> dict[str, Callable[[Scope], bool]]:
    """For each of Flower's SuperLink middlewares (by class name), the requests its
    `dispatch` does more than pass on."""
    return {
        "ControlSensitiveResponseMiddleware": _under(CONTROL),  # headers on Control routes
        "ControlAuthenticationMiddleware": _under(CONTROL),
        "ControlLicenseMiddleware": _under(CONTROL),
        "ControlEventLogMiddleware": _logged_under(CONTROL, "control_event_log_plugin"),
        "RuntimeTracingMiddleware": _tracing,
        "NodeAuthMiddleware": _under(FLEET),
        "FleetEventLogMiddleware": _logged_under(FLEET, "fleet_event_log_plugin"),
    }


class Fused:
    """ASGI middleware: the `dispatch`es of consecutive `BaseHTTPMiddleware`s run in one
    layer, in their order, each skipped for the requests its rule does not select.

    Each `BaseHTTPMiddleware` layer costs a task group, memory streams and a streaming
    response per request; three of Flower's act on every Fleet call (error translation,
    protobuf translation, node authentication). Fused, a request crosses one layer, and
    each `dispatch` gets the next one's response object directly (status, headers and body
    as that one made them) instead of a stream rebuilt from its ASGI messages. An
    exception raised below reaches each `dispatch` above it, as before.

    A protobuf call (`application/protobuf`: every Fleet and Runtime API call, each
    answered below by an empty placeholder that the protobuf translation replaces) reaches
    the app below without that machinery too: its answer is collected whole
    (`_collected`). Anything else, and the streams a handler answers with, go as
    `BaseHTTPMiddleware` takes them."""

    def __init__(self, app, members: list[tuple[type, tuple, dict, Callable | None]]):
        # each member's own instance gives its dispatch (and whatever its __init__ sets up)
        self.members = [(cls(app, *args, **kwargs).dispatch_func, applies)
                        for cls, args, kwargs, applies in members]
        self.app = app
        self.layer = BaseHTTPMiddleware(app, dispatch=self._dispatch)

    async def __call__(self, scope, receive, send) -> None:
        if not _protobuf_call(scope):
            await self.layer(scope, receive, send)
            return
        response = await self._dispatch(Request(scope, receive),
                                        functools.partial(self._collected, receive))
        await response(scope, receive, send)

    async def _collected(self, receive, request):
        """What the app below answers `request`, as one `Response` (its status, headers and
        body as the app sent them). A body a `dispatch` already read is given again."""
        read: bytes | None = getattr(request, "_body", None)
        started: dict = {}
        body: list[bytes] = []

        async def again():
            nonlocal read
            if read is None:
                return await receive()
            message, read = {"type": "http.request", "body": read, "more_body": False}, None
            return message

        async def collect(message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(request.scope, again, collect)
        if not started:
            raise RuntimeError("the app below sent no response")
        response = Response(b"".join(body), status_code=started["status"])
        response.raw_headers = list(started.get("headers", []))
        return response

    async def _dispatch(self, request, call_next):
        async def through(index: int, request):
            if index == len(self.members):
                return await call_next(request)
            dispatch, applies = self.members[index]
            if applies is not None and not applies(request.scope):
                return await through(index + 1, request)
            return await dispatch(request, functools.partial(through, index + 1))

        return await through(0, request)


def _protobuf_call(scope: Scope) -> bool:
    if scope["type"] != "http":
        return False
    media = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
    return media.split(b";")[0].strip().lower() == PROTOBUF


def streamlined(middlewares: list) -> list:
    """Flower's middleware list (outermost first) with each run of consecutive
    `BaseHTTPMiddleware`s fused into one layer (`Fused`), each member applied only to the
    requests it acts on (`acts_on`). Any other middleware keeps its place."""
    rules = acts_on()
    out: list = []
    run: list = []
    for entry in [*middlewares, None]:
        cls = getattr(entry, "cls", None)
        if isinstance(cls, type) and issubclass(cls, BaseHTTPMiddleware):
            run.append((cls, entry.args, entry.kwargs, rules.get(cls.__name__)))
            continue
        if run:
            out.append(Middleware(Fused, run))
            run = []
        if entry is not None:
            out.append(entry)
    return out
