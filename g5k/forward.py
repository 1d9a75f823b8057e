"""A local port forwarded through SSH (paramiko), like `ssh -L`: each connection to the
local port becomes a `direct-tcpip` channel to a host:port as the remote machine sees it
(e.g. the Ray dashboard on the head's 127.0.0.1), through the jump host when there is one.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading

import paramiko

from g5k import G5kError
from g5k.ssh import Remote


class Forward:
    """Serves in a background thread from construction until `close()`, which also closes
    the SSH connection (the forward owns `remote`)."""

    def __init__(self, remote: Remote, target_host: str, target_port: int,
                 local_port: int = 0, bind: str = "127.0.0.1") -> None:
        self.remote = remote
        transport = remote.client().get_transport()
        if transport is None:
            raise G5kError(f"SSH {remote.label}: not connected; run the command again")
        self.target = (target_host, target_port)
        self.label = f"{remote.label} -> {target_host}:{target_port}"
        forward = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    channel = transport.open_channel("direct-tcpip", forward.target,
                                                     self.request.getpeername())
                except (paramiko.SSHException, OSError):
                    return  # refused by the remote side: the client sees a closed socket
                try:
                    _pump(self.request, channel)
                finally:
                    channel.close()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self.server = Server((bind, local_port), Handler)
        except OSError as exc:
            remote.close()
            raise G5kError(f"cannot listen on {bind}:{local_port} ({exc.strerror}): choose "
                           "another local port (--local-port)") from None
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.remote.close()


def _pump(sock: socket.socket, channel: paramiko.Channel) -> None:
    """Copy bytes both ways until either side closes."""
    while True:
        ready, _, _ = select.select([sock, channel], [], [], 1.0)
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            channel.sendall(data)
        if channel in ready:
            data = channel.recv(65536)
            if not data:
                return
            sock.sendall(data)
