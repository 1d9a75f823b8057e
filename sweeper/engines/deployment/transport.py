"""Flower's HTTP clients on kept-alive sockets, their answers parsed in C.

Every Flower 1.41 client (a SuperNode's Fleet client, a SuperExec's and a task's Runtime
API client) is an `httpx.Client` inside `flwr.supercore.protobuf.client.ProtobufClient`,
and a 10-client trial makes about 1,100 requests through them. Per request, httpx's
transport (httpcore and h11, pure Python) and its cookie jar took about half of the
client's 0.76 ms of CPU (cProfile of `ListRuns` x 1000). `KeptAlive` is an httpx
transport that sends the request httpx built as it is, on a socket kept open per host,
and reads the answer with `httptools` (the C parser uvicorn serves with); Flower never sets
or reads a cookie, so the jar is skipped. Flower's interceptors (node signatures, version
headers, task tokens) still see httpx requests and responses. What is not a plain request
with its body in hand, or asks for a stream, goes through httpx's own transport. And every
insecure client of the process shares one SSL context (httpx made a new one per client,
3.6 ms of OpenSSL set-up, paid by every task for its one Runtime API client).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from typing import Any

import httptools
import httpx
from flwr.supercore.protobuf.constants import PROTOBUF_STREAM_MEDIA_TYPE

from sweeper.engines.deployment.hooks import patched_module


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: Flower's servers set no cookie."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Answer:
    """httptools' callbacks: one response's status, headers and body, and whether the
    connection stays open (llhttp knows that only until the message is complete)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = self.keep = False
        self.status = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()
        self.complete = True


class _Closed(Exception):
    """The server had closed a kept connection before answering on it."""


class KeptAlive(httpx.BaseTransport):
    """HTTP/1.1 on sockets kept per (scheme, host, port), TLS with `ssl_context`; requests
    it does not handle go to `fallback`."""

    def __init__(self, ssl_context: ssl.SSLContext, fallback: httpx.BaseTransport) -> None:
        self.ssl_context, self.fallback = ssl_context, fallback
        self._idle: dict[tuple[str, str, int], list[socket.socket]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if (not isinstance(request.stream, httpx.ByteStream)
                or PROTOBUF_STREAM_MEDIA_TYPE in request.headers.get("accept", "")):
            return self.fallback.handle_request(request)
        url = request.url
        where = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        wire = b"".join([request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n",
                         *(b"%s: %s\r\n" % pair for pair in request.headers.raw), b"\r\n",
                         request.read()])
        sock, reused = self._take(where, timeouts.get("connect"))
        try:
            try:
                answer = self._exchange(sock, wire, timeouts.get("read"), reused)
            except _Closed:  # the server closed it while idle: the request never reached it
                sock.close()
                sock = self._connect(where, timeouts.get("connect"))
                answer = self._exchange(sock, wire, timeouts.get("read"), False)
        except BaseException:
            sock.close()
            raise
        if answer.keep:
            with self._lock:
                self._idle.setdefault(where, []).append(sock)
        else:
            sock.close()
        return httpx.Response(answer.status, headers=answer.headers,
                              stream=httpx.ByteStream(b"".join(answer.body)),
                              extensions={"http_version": b"HTTP/1.1"})

    def _take(self, where: tuple[str, str, int], timeout: float | None
              ) -> tuple[socket.socket, bool]:
        """An idle socket to `where` still open (readable while idle means closed), or a
        new one; and whether it was kept."""
        while True:
            with self._lock:
                idle = self._idle.get(where)
                sock = idle.pop() if idle else None
            if sock is None:
                return self._connect(where, timeout), False
            readable = select.poll()  # (select.select fails on descriptors over 1023)
            readable.register(sock, select.POLLIN)
            if not readable.poll(0):
                return sock, True
            sock.close()

    def _connect(self, where: tuple[str, str, int], timeout: float | None) -> socket.socket:
        scheme, host, port = where
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return sock

    @staticmethod
    def _exchange(sock: socket.socket, wire: bytes, timeout: float | None, reused: bool
                  ) -> _Answer:
        """Send `wire` on `sock` and read the whole answer."""
        answer = _Answer()
        sock.settimeout(timeout)
        got = False
        try:
            sock.sendall(wire)
            while not answer.complete:
                data = sock.recv(262144)
                if not data:
                    if reused and not got:
                        raise _Closed
                    raise httpx.RemoteProtocolError("server closed the connection mid-answer")
                got = True
                answer.parser.feed_data(data)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except httptools.HttpParserError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            if reused and not got:
                raise _Closed from exc
            raise httpx.ReadError(str(exc)) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc)) from exc
        return answer

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for sock in socks:
                sock.close()
        self.fallback.close()


def keep_alive(client: httpx.Client) -> None:
    """Make `client` (one Flower built) use `KeptAlive` and no cookie jar."""
    fallback = getattr(client, "_transport", None)
    ssl_context = getattr(getattr(fallback, "_pool", None), "_ssl_context", None)
    if not isinstance(fallback, httpx.HTTPTransport) or ssl_context is None:
        raise RuntimeError("httpx.Client has no HTTPTransport with an SSL context: sweeper's "
                           "Flower clients need updating for this httpx")
    client._transport = KeptAlive(ssl_context, fallback)
    client._cookies = _NoCookies()


def _one_insecure_context(transports) -> None:
    """httpx transports made with `verify=False` (and no client certificate) share one SSL
    context, made once: it verifies nothing and holds no certificate."""
    create = transports.create_ssl_context
    shared: list[ssl.SSLContext] = []

    def created(verify: ssl.SSLContext | str | bool = True, cert=None, trust_env: bool = True
                ) -> ssl.SSLContext:
        if verify is not False or cert is not None:
            return create(verify=verify, cert=cert, trust_env=trust_env)
        if not shared:
            shared.append(create(verify=False, cert=None, trust_env=trust_env))
        return shared[0]

    transports.create_ssl_context = created


def flower_clients_kept_alive() -> None:
    """In this process (and its forks), every `ProtobufClient` Flower makes from now on
    uses `keep_alive`, and insecure ones share an SSL context."""
    from flwr.supercore.protobuf.client import ProtobufClient

    made = ProtobufClient.__init__
    if getattr(made, "kept_alive", False):
        return
    _one_insecure_context(patched_module("httpx._transports.default", "create_ssl_context"))

    def init(self, *args, **kwargs) -> None:
        made(self, *args, **kwargs)
        if not isinstance(getattr(self, "_client", None), httpx.Client):
            raise RuntimeError("ProtobufClient has no httpx.Client: sweeper's Flower clients "
                               "need updating for this Flower")
        keep_alive(self._client)

    init.kept_alive = True
    ProtobufClient.__init__ = init
