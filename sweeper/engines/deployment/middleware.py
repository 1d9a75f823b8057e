"""Flower's HTTP middlewares, each run only for the requests it acts on.

Flower 1.41 wraps every request to a SuperLink (nine of them, `flwr.superlink.main.
_get_middleware`) and to a SuperNode's own Runtime API (three) in Starlette
`BaseHTTPMiddleware`s. Each builds a task group, memory streams and a streaming response
around the layer below, whether or not it does anything for that request: py-spy of a kept
10-client federation found 65% of the SuperLink's CPU in that machinery and 2% in the
handlers, and the SuperLink is the deployment engine's bottleneck (one Python process
serving every SuperNode's and the ServerApp's requests).

`Scoped` keeps a middleware's own code, but sends a request it only passes on (`return
await call_next(request)` in its `dispatch`, as read in Flower 1.41) to the next layer
directly. `acts_on` says, per middleware class, which requests it acts on; a class not
listed (an extension's, or one a Flower upgrade adds) runs for every request, as before.
Nothing that checks or refuses a request is skipped for a request it checks: node
authentication still runs on every Fleet call, the Control API's authentication on every
Control call.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

Scope = dict

CONTROL = "/v1/control/"
FLEET = "/v1/fleet/"


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


class Scoped:
    """ASGI middleware: `middleware` for the requests `applies` selects, straight to
    `app` for the others."""

    def __init__(self, app, middleware, applies: Callable[[Scope], bool], *args, **kwargs):
        self.app = app
        self.middleware = middleware(app, *args, **kwargs)
        self.applies = applies

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not self.applies(scope):
            await self.app(scope, receive, send)
        else:
            await self.middleware(scope, receive, send)


def scoped(middlewares: list) -> list:
    """Flower's middleware list with each listed class wrapped in `Scoped`."""
    from starlette.middleware import Middleware

    rules = acts_on()
    out = []
    for entry in middlewares:
        rule = rules.get(getattr(entry.cls, "__name__", ""))
        out.append(entry if rule is None
                   else Middleware(Scoped, entry.cls, rule, *entry.args, **entry.kwargs))
    return out


def scoped_class(cls):
    """`cls` as a middleware factory (for `add_middleware`) that runs it only for the
    requests it acts on."""
    rule = acts_on().get(cls.__name__)
    return cls if rule is None else functools.partial(Scoped, middleware=cls, applies=rule)
