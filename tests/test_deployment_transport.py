"""`transport.KeptAlive` against a real uvicorn server on loopback: the same answers as
httpx's own transport, connections kept and renewed, TLS verified, timeouts and streams."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import httpx
import httpx._transports.default as transports
import pytest
import uvicorn
from flwr.supercore.protobuf.client import ProtobufClient
from flwr.supercore.protobuf.constants import PROTOBUF_STREAM_MEDIA_TYPE
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sweeper.engines.deployment.tls import make_credentials
from sweeper.engines.deployment.transport import KeptAlive, flower_clients_kept_alive

KEEP_ALIVE_S = 0.5  # the server closes a connection idle this long


async def echo(request):
    body = await request.body()
    return Response(body[::-1], status_code=int(request.query_params.get("status", 200)),
                    headers={"x-peer-port": str(request.client.port),
                             "x-seen-type": request.headers.get("content-type", "")},
                    media_type="application/protobuf")


async def big(request):
    return Response(bytes(range(256)) * 8192, media_type="application/octet-stream")


async def frames(request):
    async def chunks():
        for i in range(3):
            yield f"frame {i};".encode()
    return StreamingResponse(chunks(), media_type=PROTOBUF_STREAM_MEDIA_TYPE)


async def slow(request):
    await asyncio.sleep(1.0)
    return Response(b"late")


async def closing(request):
    return Response(b"bye", headers={"connection": "close"})


APP = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/big", big),
                        Route("/frames", frames, methods=["POST"]), Route("/slow", slow),
                        Route("/closing", closing)])


def _serve(tls_files: tuple | None = None):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    extra = ({"ssl_certfile": str(tls_files[0]), "ssl_keyfile": str(tls_files[1])}
             if tls_files else {})
    server = uvicorn.Server(uvicorn.Config(APP, log_level="error", lifespan="off",
                                           timeout_keep_alive=KEEP_ALIVE_S, **extra))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_port():
    server, thread, port = _serve()
    yield port
    server.should_exit = True
    thread.join(5)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    creds = make_credentials(tmp_path_factory.mktemp("tls"), ["127.0.0.1"])
    server, thread, port = _serve((creds.cert, creds.key))
    yield port, creds
    server.should_exit = True
    thread.join(5)


def _kept(verify: ssl.SSLContext | bool = False) -> httpx.Client:
    client = httpx.Client(verify=verify, timeout=5.0)
    client._transport = KeptAlive(client._transport._pool._ssl_context, client._transport)
    return client


def _answer(response: httpx.Response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in {"date", "x-peer-port"}}
    return response.status_code, headers, response.content


@pytest.mark.parametrize("path, status, body", [
    ("/echo", 200, b"\x08\x01protobuf"), ("/echo", 401, b"refused"), ("/echo", 200, b""),
    ("/big", 200, None), ("/nowhere", 404, None), ("/closing", 200, None),
])
def test_answers_as_httpx_own_transport(server_port, path, status, body):
    url = f"http://127.0.0.1:{server_port}{path}?status={status}"
    method = "POST" if body is not None else "GET"
    headers = {"content-type": "application/protobuf"}
    with httpx.Client() as theirs, _kept() as ours:
        expected = theirs.request(method, url, content=body, headers=headers)
        got = ours.request(method, url, content=body, headers=headers)
    assert _answer(got) == _answer(expected)
    assert got.status_code == (status if path == "/echo" else 404 if path == "/nowhere" else 200)


def test_one_connection_is_kept_and_renewed_once_the_server_closed_it(server_port):
    url = f"http://127.0.0.1:{server_port}/echo"
    with _kept() as client:
        ports = {client.post(url, content=b"x").headers["x-peer-port"] for _ in range(20)}
        assert len(ports) == 1  # one socket for twenty requests
        time.sleep(KEEP_ALIVE_S * 3)  # the server closes the idle connection
        again = client.post(url, content=b"abc")
        assert again.content == b"cba"
        assert again.headers["x-peer-port"] not in ports


def test_an_answer_saying_close_is_not_kept(server_port):
    with _kept() as client:
        client.get(f"http://127.0.0.1:{server_port}/closing")
        assert not any(client._transport._idle.values())


def test_streams_go_through_httpx_own_transport(server_port):
    url = f"http://127.0.0.1:{server_port}/frames"
    with _kept() as client, client.stream(
            "POST", url, content=b"", headers={"accept": PROTOBUF_STREAM_MEDIA_TYPE}) as response:
        assert b"".join(response.iter_bytes()) == b"frame 0;frame 1;frame 2;"
    assert not any(client._transport._idle.values())  # not ours: none kept here


def test_read_timeout_and_refused_connection_are_httpx_errors(server_port):
    with _kept() as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"http://127.0.0.1:{server_port}/slow", timeout=0.2)
        assert client.post(f"http://127.0.0.1:{server_port}/echo", content=b"ok").content == b"ko"
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with _kept() as client, pytest.raises(httpx.ConnectError):
        client.post(f"http://127.0.0.1:{port}/echo", content=b"x")


def test_tls_is_verified_against_the_ca(tls_server, tmp_path):
    port, creds = tls_server
    trusted = ssl.create_default_context(cafile=str(creds.ca))
    with _kept(trusted) as client:
        assert client.post(f"https://127.0.0.1:{port}/echo", content=b"abc").content == b"cba"
    stranger = make_credentials(tmp_path / "other", ["127.0.0.1"])
    with _kept(ssl.create_default_context(cafile=str(stranger.ca))) as client, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.post(f"https://127.0.0.1:{port}/echo", content=b"abc")


def test_flowers_clients_get_it_and_insecure_ones_share_a_context(server_port, tls_server,
                                                                   monkeypatch):
    monkeypatch.setattr(ProtobufClient, "__init__", ProtobufClient.__init__)
    monkeypatch.setattr(transports, "create_ssl_context", transports.create_ssl_context)
    flower_clients_kept_alive()
    insecure = [ProtobufClient(f"http://127.0.0.1:{server_port}", verify=False)
                for _ in range(2)]
    port, creds = tls_server
    trusted = ssl.create_default_context(cafile=str(creds.ca))
    secure = ProtobufClient(f"https://127.0.0.1:{port}", verify=trusted)
    contexts = [client._client._transport.ssl_context for client in [*insecure, secure]]
    assert all(isinstance(client._client._transport, KeptAlive)
               for client in [*insecure, secure])
    assert contexts[0] is contexts[1] and contexts[0].verify_mode == ssl.CERT_NONE
    assert contexts[2] is trusted
    for client in [*insecure, secure]:
        client.close()
