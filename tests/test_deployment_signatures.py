"""`node_signatures`: Flower's own signing interceptor and node authentication, with
signatures made once a second and each verified once; wrong ones still refused."""

from __future__ import annotations

import datetime
import importlib
from base64 import b64decode

import httpx
import pytest
from flwr.common.constant import TIMESTAMP_HEADER
from flwr.supercore.constant import FLEET_HTTP_PUBLIC_KEY_HEADER, FLEET_HTTP_SIGNATURE_HEADER
from flwr.supercore.primitives.asymmetric import generate_key_pairs, sign_message
from flwr.supercore.protobuf.client import ProtobufRequestContext
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

from sweeper.engines.deployment.node_signatures import (
    CLIENT,
    SERVER,
    sign_once_a_second,
    verify_each_signature_once,
)


@pytest.fixture
def flowers_own_restored(monkeypatch):
    client, server = importlib.import_module(CLIENT), importlib.import_module(SERVER)
    for module, name in ((client, "now"), (client, "sign_message"),
                         (server, "verify_signature")):
        monkeypatch.setattr(module, name, getattr(module, name))
    return client, server


def _signed_headers(interceptor) -> dict[str, str]:
    request = httpx.Request("POST", "http://127.0.0.1/v1/fleet/pull-messages")
    context = ProtobufRequestContext(rpc_method="PullMessages", message=None, request=request)
    interceptor.intercept(context, lambda ctx: httpx.Response(200, request=ctx.request))
    return dict(request.headers)


def test_a_node_signs_each_second_once_and_its_signature_verifies(flowers_own_restored):
    _, server = flowers_own_restored
    private, public = generate_key_pairs()
    interceptor = NodeAuthHttpInterceptor(private, public)
    sign_once_a_second()
    seconds = {}
    for _ in range(5):
        headers = _signed_headers(interceptor)
        seconds.setdefault(headers[TIMESTAMP_HEADER], set()).add(
            headers[FLEET_HTTP_SIGNATURE_HEADER])
    assert all(len(signatures) == 1 for signatures in seconds.values())
    stamp, (signature,) = next(iter(seconds.items()))
    signed_at = datetime.datetime.fromisoformat(stamp)
    assert signed_at.microsecond == 0
    assert 0 <= (datetime.datetime.now(datetime.UTC) - signed_at).total_seconds() < 2
    assert b64decode(headers[FLEET_HTTP_PUBLIC_KEY_HEADER])
    assert server.verify_signature(public, stamp.encode(), b64decode(signature))


def test_the_link_remembers_outcomes_not_keys(flowers_own_restored):
    _, server = flowers_own_restored
    verify_each_signature_once()
    private, public = generate_key_pairs()
    _, stranger = generate_key_pairs()
    stamp = b"2026-12-04T21:00:00+00:00"
    good = sign_message(private, stamp)
    assert server.verify_signature(public, stamp, good)
    assert server.verify_signature(public, stamp, good)  # remembered
    assert not server.verify_signature(stranger, stamp, good)  # someone else's key
    assert not server.verify_signature(public, b"2026-12-04T21:00:01+00:00", good)
    tampered = bytes([good[0] ^ 1]) + good[1:]
    assert not server.verify_signature(public, stamp, tampered)
    assert not server.verify_signature(public, stamp, tampered)  # remembered as wrong
