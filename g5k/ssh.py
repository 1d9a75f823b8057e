"""SSH to Grid'5000 machines with paramiko, through the access jump host when outside."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import paramiko

from g5k import G5kError

Say = Callable[[str], None]


class Remote:
    """One SSH endpoint; `via` is the jump host's Remote (ProxyJump over direct-tcpip)."""

    def __init__(self, host: str, user: str, key: str, port: int = 22,
                 via: Remote | None = None, dry_run: bool = False,
                 say: Say | None = None) -> None:
        self.host, self.user, self.port, self.via = host, user, port, via
        self.key = str(Path(key).expanduser())
        self.dry_run = dry_run
        self.say = say or (lambda _line: None)
        self._client: paramiko.SSHClient | None = None

    @property
    def label(self) -> str:
        hops = f"{self.via.label} -> " if self.via else ""
        return f"{hops}{self.user}@{self.host}:{self.port}"

    def client(self) -> paramiko.SSHClient:
        if self._client is not None:
            return self._client
        client = paramiko.SSHClient()
        client.load_system_host_keys()
        # Grid'5000 nodes are redeployed and share host keys managed by the platform.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        sock = None
        try:
            if self.via is not None:
                transport = self.via.client().get_transport()
                assert transport is not None
                sock = transport.open_channel("direct-tcpip", (self.host, self.port),
                                              ("127.0.0.1", 0))
            key = paramiko.PKey.from_path(self.key)
            client.connect(self.host, port=self.port, username=self.user, pkey=key,
                           sock=sock, timeout=20, allow_agent=False, look_for_keys=False)
        except paramiko.AuthenticationException:
            raise G5kError(f"SSH {self.label}: the key {self.key} was refused; add its public "
                           "key in your Grid'5000 account (api-proxy/account settings)") from None
        except (OSError, paramiko.SSHException) as exc:
            raise G5kError(f"SSH {self.label}: cannot connect ({exc})") from None
        self._client = client
        return client

    def run(self, command: str, check: bool = True, timeout_s: float = 600) -> str:
        """Run a shell command; its stdout. Raises with stderr when it fails and `check`."""
        code, out, err = self.execute(command, timeout_s)
        if check and code != 0:
            lines = err.strip().splitlines()
            raise G5kError(f"ssh {self.label}: `{command}` failed with exit code {code}: "
                           f"{lines[-1] if lines else 'no message'}")
        return out

    def execute(self, command: str, timeout_s: float = 600) -> tuple[int, str, str]:
        """Run a shell command: (exit code, stdout, stderr); (0, "", "") in dry-run mode."""
        self.say(("[dry-run] " if self.dry_run else "") + f"ssh {self.label}: {command}")
        if self.dry_run:
            return 0, "", ""
        _, stdout, stderr = self.client().exec_command(command, timeout=timeout_s)
        out = stdout.read().decode()
        err = stderr.read().decode()
        return stdout.channel.recv_exit_status(), out, err

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.via is not None:
            self.via.close()
