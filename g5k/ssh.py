"""SSH to Grid'5000 machines with paramiko, through the access jump host when outside.

Login as OpenSSH does it for Grid'5000's passphrase-protected keys: the keys of a running
ssh-agent first, then the key file, its passphrase from G5K_SSH_PASSPHRASE or asked on the
terminal. Host keys are trusted on first use and appended to a known_hosts file (OpenSSH's
`StrictHostKeyChecking accept-new`); a host whose key changed is refused before login.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from g5k import G5kError

Say = Callable[[str], None]

PASSPHRASE_ENV = "G5K_SSH_PASSPHRASE"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"  # read only (e.g. a frontend's node keys)


class KeyFile:
    """The private key file (`ssh_key`); decrypted at most once, and only when the agent's
    keys were not enough. One KeyFile shared by several Remotes asks once."""

    def __init__(self, path: str) -> None:
        self.path = str(Path(path).expanduser())
        self._key: paramiko.PKey | None = None

    def public_base64(self) -> str | None:
        """The public key from `<path>.pub`, when there is one: no passphrase needed."""
        try:
            fields = Path(self.path + ".pub").read_text().split()
        except (OSError, UnicodeDecodeError):
            return None
        return fields[1] if len(fields) > 1 else None

    def check_usable(self) -> None:
        """Before anything is reserved: a key to log in with is at hand, one the agent
        holds or this file unlocked (one line if not); whether a host accepts it is only
        known by connecting."""
        agent = paramiko.Agent()
        try:
            if agent.get_keys():
                return
        finally:
            agent.close()
        self.load()

    def load(self) -> paramiko.PKey:
        if self._key is None:
            self._key = self._decrypt()
        return self._key

    def _decrypt(self) -> paramiko.PKey:
        try:
            return paramiko.PKey.from_path(self.path)
        except FileNotFoundError:
            raise G5kError(f"ssh_key: {self.path} not found (and no ssh-agent key was "
                           "accepted): set ssh_key in the cluster file to your Grid'5000 "
                           "private key") from None
        except OSError as exc:
            raise G5kError(f"ssh_key: cannot read {self.path} ({exc.strerror})") from None
        except TypeError:
            pass  # cryptography's way of saying "encrypted, and no password given"
        except (ValueError, paramiko.SSHException, paramiko.UnknownKeyType):
            raise G5kError(f"ssh_key: {self.path} is not a private key paramiko can "
                           "read") from None
        passphrase, source = _passphrase(self.path)
        try:
            return paramiko.PKey.from_path(self.path, password=passphrase.encode())
        except (ValueError, TypeError, paramiko.SSHException):
            raise G5kError(f"ssh_key: wrong passphrase for {self.path} ({source})") from None


def _passphrase(path: str) -> tuple[str, str]:
    """The key file's passphrase and where it came from."""
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env, f"from {PASSPHRASE_ENV}"
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(f"Enter passphrase for key '{path}': "), "typed"
    raise G5kError(f"ssh_key: {path} is locked by a passphrase and none is available: load "
                   f"it in ssh-agent (ssh-add {path}), or set {PASSPHRASE_ENV}, or run from "
                   "a terminal to be asked")


class _Login(paramiko.AuthStrategy):
    """ssh-agent keys (the key file's own first), then the key file if the agent does not
    hold it: the file is only decrypted when its turn comes."""

    def __init__(self, user: str, key: KeyFile) -> None:
        super().__init__(ssh_config=paramiko.SSHConfig())
        self.user, self.key = user, key
        self.agent: paramiko.Agent | None = None

    def get_sources(self) -> Iterator[paramiko.AuthSource]:
        self.agent = paramiko.Agent()  # no SSH_AUTH_SOCK, or a dead one: no keys
        public = self.key.public_base64()
        held = sorted(self.agent.get_keys(), key=lambda k: k.get_base64() != public)
        for agent_key in held:
            yield paramiko.InMemoryPrivateKey(self.user, agent_key)
        if public is None or not any(k.get_base64() == public for k in held):
            yield paramiko.InMemoryPrivateKey(self.user, self.key.load())

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()


def host_key_name(host: str, port: int) -> str:
    """The host's name in known_hosts, as OpenSSH (and paramiko's lookup) write it."""
    return host if port == 22 else f"[{host}]:{port}"


def known_line(path: str | Path, name: str) -> int | None:
    """The number of the first line of a known_hosts file for `name`, hashed or not."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for number, line in enumerate(lines, 1):
        try:
            entry = HostKeyEntry.from_line(line.strip())
            if entry is not None and any(_names(name, h) for h in entry.hostnames):
                return number
        except (InvalidHostKey, paramiko.SSHException, ValueError, AssertionError):
            continue  # a line paramiko cannot parse is not this host's
    return None


def _names(name: str, entry_name: str) -> bool:
    if entry_name.startswith("|1|"):  # hashed: HMAC-SHA1 of the name, salted
        return paramiko.HostKeys.hash_host(name, entry_name) == entry_name
    return entry_name == name


def _known_hosts(path: str) -> paramiko.HostKeys:
    return paramiko.HostKeys(path) if Path(path).is_file() else paramiko.HostKeys()


class SaveNewHostKeys(paramiko.MissingHostKeyPolicy):
    """Trust an unknown host's key and append it to the known_hosts file. Appending (not
    `SSHClient.save_host_keys`, which rewrites the file with only what paramiko parsed)
    keeps the lines paramiko cannot read, e.g. @cert-authority ones. Entries are hashed
    when the file already has hashed ones (OpenSSH's HashKnownHosts)."""

    def __init__(self, path: str, say: Say) -> None:
        self.path, self.say = path, say

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        known = _known_hosts(self.path)  # again: another connection may have saved it
        if known.check(hostname, key):
            return
        saved = known.lookup(hostname)
        if saved:
            raise paramiko.BadHostKeyException(hostname, key, next(iter(saved.values())))
        file = Path(self.path)
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = file.read_text() if file.is_file() else ""
        hashed = any(line.startswith("|1|") for line in text.splitlines())
        name = paramiko.HostKeys.hash_host(hostname) if hashed else hostname
        with file.open("a") as out:
            out.write(("\n" if text and not text.endswith("\n") else "")
                      + HostKeyEntry([name], key).to_line())
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.say(f"ssh: {hostname} trusted on first use ({key.get_name()} "
                 f"{key.fingerprint}), saved in {self.path}")


class Remote:
    """One SSH endpoint; `via` is the jump host's Remote (ProxyJump over direct-tcpip).
    `key` is the `ssh_key` path or a KeyFile shared between Remotes (a path equal to the
    jump host's shares its KeyFile); `known_hosts` is where host keys are checked and saved.
    """

    def __init__(self, host: str, user: str, key: str | KeyFile, port: int = 22,
                 via: Remote | None = None, dry_run: bool = False,
                 say: Say | None = None, known_hosts: str = DEFAULT_KNOWN_HOSTS) -> None:
        self.host, self.user, self.port, self.via = host, user, port, via
        if isinstance(key, str):
            path = str(Path(key).expanduser())
            key = via.key if via is not None and via.key.path == path else KeyFile(path)
        self.key = key
        self.known_hosts = str(Path(known_hosts).expanduser())
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
        client.set_missing_host_key_policy(SaveNewHostKeys(self.known_hosts, self.say))
        login = _Login(self.user, self.key)
        try:
            if Path(SYSTEM_KNOWN_HOSTS).is_file():
                client.load_system_host_keys(SYSTEM_KNOWN_HOSTS)
            if Path(self.known_hosts).is_file():
                client.load_host_keys(self.known_hosts)
            sock = None
            if self.via is not None:
                transport = self.via.client().get_transport()
                assert transport is not None
                sock = transport.open_channel("direct-tcpip", (self.host, self.port),
                                              ("127.0.0.1", 0))
            client.connect(self.host, port=self.port, username=self.user, sock=sock,
                           timeout=20, auth_strategy=login)
        except BaseException as exc:
            client.close()
            raise self._error(exc) from None
        finally:
            login.close()
        self._client = client
        return client

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, paramiko.BadHostKeyException):
            return G5kError(self._changed_host_key())
        if isinstance(exc, InvalidHostKey):
            return G5kError(f"known_hosts: a line of {self.known_hosts} (or "
                            f"{SYSTEM_KNOWN_HOSTS}) is not a host key: {exc.line[:80]}")
        if isinstance(exc, paramiko.AuthenticationException):
            return G5kError(f"SSH {self.label}: login refused with the keys of ssh-agent "
                            f"and {self.key.path}: add the public key in your Grid'5000 "
                            "account (api-proxy/account settings)")
        if isinstance(exc, (OSError, paramiko.SSHException)):
            return G5kError(f"SSH {self.label}: cannot connect ({exc})")
        return exc

    def _changed_host_key(self) -> str:
        name = host_key_name(self.host, self.port)
        path, line = next(((path, line) for path in (self.known_hosts, SYSTEM_KNOWN_HOSTS)
                           if (line := known_line(path, name))), (self.known_hosts, None))
        at = f"{path} line {line}" if line else path
        return (f"SSH {self.label}: refused: the host key of {name} is not the one saved in "
                f"{at} (it changed: reinstalled, or someone is in the middle); nothing was "
                f"run. If the change is expected, remove that line (ssh-keygen -R '{name}' "
                f"-f {path}) and connect again")

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
