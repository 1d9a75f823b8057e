"""Flower's HTTP routes in the order of their traffic: the ones every message crosses first.

FastAPI 0.138 finds a request's route by trying the app's routers in order, each trying its
routes in order, twice per request (once to match, once to handle). Flower's SuperLink app
lists the Control router (41 routes) before the Fleet and Runtime ones, and each router
lists its object routes near its end; so a SuperNode's `pull-object` was tried against
some sixty routes, which was half of the SuperLink's Python per request (cProfile of a kept
10-client federation). All of Flower's paths are distinct, so which route a request reaches
does not depend on the order: only how many are tried first.
"""

from __future__ import annotations

from sweeper.engines.deployment.middleware import FLEET

RUNTIME = "/v1/runtime/"
OBJECT_ROUTES = ("/pull-object", "/push-object")  # six of each per message at each hop


def served_paths(route) -> list[str]:
    """The full paths `route` serves (an included router's, all of its routes')."""
    if hasattr(route, "effective_route_contexts"):
        return [(context.starlette_route or context.original_route).path
                for context in route.effective_route_contexts()]
    return [getattr(route, "path", "")]


def _rank(route) -> int:
    paths = served_paths(route)
    if any(path.endswith(OBJECT_ROUTES) for path in paths):
        return 0
    if any(path.startswith((FLEET, RUNTIME)) for path in paths):
        return 1
    return 2


def routers(app) -> list:
    """`app`'s router and every router it includes, however deep."""
    found, pending = [], [app.router]
    while pending:
        router = pending.pop()
        found.append(router)
        pending += [route.original_router for route in router.routes
                    if hasattr(route, "original_router")]
    return found


def busiest_first(app) -> None:
    """Order `app`'s routes, and those of its included routers, busiest first (stably),
    before it serves its first request."""
    for router in routers(app):
        router.routes.sort(key=_rank)
        # FastAPI keeps an included router's candidates until its routes change
        getattr(router, "_mark_routes_changed", lambda: None)()
