"""The streamlined Flower apps (`engines/deployment/http_app.py`) answer as Flower's own do.

Flower's real SuperLink app and a SuperNode's Runtime API app, each built twice (as Flower
makes it, and streamlined as our launchers run it), get the same requests: served ones,
refused ones (no node signature, no task token), malformed ones (media type, protobuf
payload), a wrong method and an unknown path. Status, headers and body must be equal; so
must the decoded answer of a served Control call, but for the time stamp it carries.
"""

from __future__ import annotations

import importlib

import flwr.superlink.main as superlink_main
import flwr.supernode.main as supernode_main
import pytest
from flwr.proto.control_pb2 import ListRunsRequest, ListRunsResponse  # pylint: disable=E0611
from flwr.proto.message_pb2 import PullObjectRequest  # pylint: disable=E0611
from flwr.proto.run_pb2 import GetRunRequest  # pylint: disable=E0611
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supernode.nodestate import NodeStateFactory
from starlette.testclient import TestClient

from sweeper.engines.deployment.handlers import (
    HANDLER_CALLERS,
    NODE_AUTHENTICATION,
    run_handlers_in_place,
)
from sweeper.engines.deployment.http_app import streamline
from sweeper.engines.deployment.routes import routers, served_paths

PROTOBUF = {"content-type": "application/protobuf"}

LINK_REQUESTS = [
    ("GET", "/health", b"", {}),
    ("POST", "/v1/control/list-runs", b"not protobuf", {"content-type": "text/plain"}),
    ("POST", "/v1/fleet/pull-object", b"\xff\xff", PROTOBUF),
    ("POST", "/v1/fleet/pull-object", PullObjectRequest(object_id="0" * 64).SerializeToString(),
     PROTOBUF),  # no node signature: refused by node authentication
    ("POST", "/v1/fleet/get-run", GetRunRequest(run_id=1).SerializeToString(), PROTOBUF),
    ("POST", "/v1/runtime/pull-object", PullObjectRequest().SerializeToString(), PROTOBUF),
    ("GET", "/v1/fleet/pull-object", b"", {}),
    ("POST", "/v1/nowhere", b"", PROTOBUF),
]
NODE_REQUESTS = [
    ("GET", "/health", b"", {}),
    ("POST", "/v1/runtime/acquire-task", b"", PROTOBUF),
    ("POST", "/v1/runtime/pull-object", PullObjectRequest().SerializeToString(),
     PROTOBUF),  # no task token: refused
    ("POST", "/v1/runtime/pull-object", b"\xff\xff", PROTOBUF),
    ("POST", "/v1/runtime/pull-object", b"x", {"content-type": "text/plain"}),
    ("GET", "/v1/runtime/pull-object", b"", {}),
    ("POST", "/v1/nowhere", b"", PROTOBUF),
]


@pytest.fixture
def flowers_defaults_restored(monkeypatch):
    """Undo `run_handlers_in_place` after the test, and the route order `busiest_first`
    gives Flower's module-level routers (shared by every app made in this process), so
    that each test's "Flower's own" app is Flower's order."""
    for module in map(importlib.import_module, (*HANDLER_CALLERS, NODE_AUTHENTICATION)):
        monkeypatch.setattr(module, "run_in_threadpool", module.run_in_threadpool)
    orders = [(router, list(router.routes))
              for app in (superlink_main.create_app(), _supernode_app())
              for router in routers(app)]
    yield
    for router, routes in orders:
        router.routes[:] = routes
        router._mark_routes_changed()


def _supernode_app():
    return supernode_main.create_app(state_factory=NodeStateFactory(ObjectStoreFactory()))


def _answers(app, requests: list) -> list[tuple]:
    with TestClient(app, base_url="http://127.0.0.1") as client:
        return [(method, path, (response := client.request(
                    method, path, content=body, headers=headers)).status_code,
                 sorted(response.headers.items()), response.content)
                for method, path, body, headers in requests]


@pytest.mark.parametrize("create_app, requests", [
    (superlink_main.create_app, LINK_REQUESTS),
    (_supernode_app, NODE_REQUESTS),
], ids=["superlink", "supernode"])
def test_streamlined_app_answers_as_flowers_own(create_app, requests, flowers_defaults_restored):
    flowers = _answers(create_app(), requests)
    run_handlers_in_place(NODE_AUTHENTICATION)
    ours = _answers(streamline(create_app()), requests)
    assert ours == flowers
    statuses = {answer[2] for answer in flowers}
    assert 200 in statuses and statuses & {401, 403} and {400, 404, 405, 415} <= statuses


def test_streamlined_superlink_serves_control_calls_alike(flowers_defaults_restored):
    request = ("POST", "/v1/control/list-runs", ListRunsRequest().SerializeToString(), PROTOBUF)
    (flowers,) = _answers(superlink_main.create_app(), [request])
    run_handlers_in_place(NODE_AUTHENTICATION)
    (ours,) = _answers(streamline(superlink_main.create_app()), [request])
    assert ours[2] == flowers[2] == 200
    assert ours[3] == flowers[3]
    theirs, mine = ListRunsResponse(), ListRunsResponse()
    theirs.ParseFromString(flowers[4])
    mine.ParseFromString(ours[4])
    theirs.ClearField("now")
    mine.ClearField("now")
    assert mine == theirs


def test_streamlined_superlink_tries_the_message_routes_first(flowers_defaults_restored):
    app = streamline(superlink_main.create_app())
    first = served_paths(app.router.routes[0])
    assert first[:2] == ["/v1/fleet/push-object", "/v1/fleet/pull-object"]
    assert any(path.startswith("/v1/control/") for path in served_paths(app.router.routes[-1]))
