"""The Fleet gateway: the one door of a trial's SuperLink that faces other hosts.

Flower 1.41's SuperLink serves its Fleet, Control and Runtime APIs on one HTTP port, so it
binds 127.0.0.1, and where SuperNodes run elsewhere (Ray placement, network namespaces) this
process listens on the address they reach and forwards Fleet API calls only: nobody else
can start a run (code execution) or register a node through the Control API.
"""

from __future__ import annotations

import argparse
import re
import ssl
from collections.abc import Sequence

from sweeper.engines.deployment.tls import Credentials

# What the gateway forwards: Fleet API calls (all POST /v1/fleet/<method>), nothing else.
# A strict match, not a prefix: an HTTP client would resolve "/v1/fleet/../control/...".
FLEET_CALL = re.compile(r"/v1/fleet/[a-z][a-z-]*")
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
               b"transfer-encoding", b"upgrade", b"host"}


def gateway_argv(python: str, host: str, port: int, upstream: str,
                 creds: Credentials | None) -> list[str]:
    """The command line of a Fleet gateway on `host:port` in front of `upstream`
    (host:port of the SuperLink), with the SuperLink's certificate if it has one."""
    tls = (["--cert", str(creds.cert), "--key", str(creds.key), "--ca", str(creds.ca)]
           if creds else [])
    return [python, "-m", "sweeper.engines.deployment.gateway", "--host", host, "--port", str(port),
            "--upstream", upstream, *tls]


def fleet_gateway(upstream_url: str, verify: ssl.SSLContext | bool):
    """An ASGI app forwarding Fleet API calls to `upstream_url` and refusing the rest."""
    import httpx

    clients: list[httpx.AsyncClient] = []  # made in the server's event loop

    async def reply(send, status: int, text: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text})

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or not FLEET_CALL.fullmatch(scope["path"]):
            await reply(send, 404, b"only the Fleet API is served on this address\n")
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if not clients:
            clients.append(httpx.AsyncClient(verify=verify, timeout=120.0))
        headers = [(k, v) for k, v in scope["headers"]
                   if k.lower() not in _HOP_BY_HOP | {b"content-length"}]
        request = clients[0].build_request("POST", upstream_url + scope["path"],
                                           content=bytes(body), headers=headers)
        try:
            response = await clients[0].send(request, stream=True)
        except httpx.HTTPError:
            await reply(send, 502, b"the SuperLink did not answer\n")
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw
                                    if k.lower() not in _HOP_BY_HOP]})
            async for chunk in response.aiter_raw():  # as sent: content-length holds
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fleet-API-only gateway to a SuperLink")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of the SuperLink")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    args = parser.parse_args(argv)
    import uvicorn

    verify: ssl.SSLContext | bool = False
    scheme = "http"
    if args.ca:
        verify, scheme = ssl.create_default_context(cafile=args.ca), "https"
    uvicorn.run(fleet_gateway(f"{scheme}://{args.upstream}", verify), host=args.host,
                port=args.port, ssl_certfile=args.cert, ssl_keyfile=args.key,
                lifespan="off", access_log=False, log_level="warning", http="h11")


if __name__ == "__main__":
    main()
