"""SSH as Grid'5000 users have it, against real OpenSSH servers on loopback (g5k_fakes.Sshd):
a passphrase-protected key held by a real ssh-agent, or unlocked from G5K_SSH_PASSPHRASE or
a prompt; host keys trusted on first use, saved, and a changed one refused."""

from __future__ import annotations

import getpass
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import g5k_fakes
import paramiko
import pytest
import yaml
from g5k_fakes import Sshd

from g5k import G5kError
from g5k.config import load_cluster
from g5k.ssh import PASSPHRASE_ENV, KeyFile, Remote, SaveNewHostKeys

PASSPHRASE = "secret-Phrase-42"
USER = getpass.getuser()
SHELL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


@pytest.fixture(autouse=True)
def nothing_ambient(monkeypatch: pytest.MonkeyPatch) -> None:
    """No agent, no passphrase in the environment, no terminal, unless a test says so."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def keygen(path: Path, *options: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-N", PASSPHRASE, "-C", "alice@g5k", "-f", str(path),
                    *options], check=True, timeout=30)
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """A passphrase-protected ed25519 key in OpenSSH's format, as Grid'5000 asks for."""
    return keygen(tmp_path / "id_ed25519", "-t", "ed25519")


def start_sshd(root: Path, key: Path) -> Sshd:
    return Sshd(root, Path(f"{key}.pub").read_text().strip(), SHELL_ENV)


@pytest.fixture
def sshd(tmp_path: Path, key: Path):
    server = start_sshd(tmp_path / "sshd", key)
    yield server
    server.close()


@pytest.fixture
def jump_and_node(tmp_path: Path, key: Path):
    """access.grid5000.fr (127.0.0.1) and a frontend behind it (127.0.0.2)."""
    jump, node = start_sshd(tmp_path / "jump", key), start_sshd(tmp_path / "node", key)
    yield jump, node
    jump.close()
    node.close()


class Agent:
    """A real ssh-agent on its own socket; `add` unlocks a key with ssh-add and SSH_ASKPASS
    (the passphrase is in a script only ssh-add runs, never in this process' environment)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="g5kagent", dir="/tmp"))  # short socket path
        self.sock = self.dir / "agent.sock"
        self.process = subprocess.Popen(["ssh-agent", "-D", "-a", str(self.sock)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.sock.is_socket():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("ssh-agent did not start")
            time.sleep(0.02)

    def add(self, key: Path, passphrase: str) -> None:
        askpass = self.dir / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
        askpass.chmod(0o700)
        env = {"PATH": os.environ["PATH"], "SSH_AUTH_SOCK": str(self.sock),
               "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
        subprocess.run(["ssh-add", str(key)], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, check=True, timeout=30)
        askpass.unlink()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def agent():
    running = Agent()
    yield running
    running.close()


def host_public_key(server_root: Path) -> list[str]:
    """[type, base64] of an sshd's host key, read by OpenSSH from the server's key file."""
    out = subprocess.run(["ssh-keygen", "-y", "-f", str(server_root / "host_key")],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return out.split()[:2]


def saved_entry(known_hosts: Path, name: str) -> list[str]:
    """The known_hosts line OpenSSH finds for `name` (hashed or not): its fields."""
    found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(known_hosts)],
                           capture_output=True, text=True, timeout=30)
    lines = [line for line in found.stdout.splitlines() if not line.startswith("#")]
    assert found.returncode == 0 and len(lines) == 1, (name, known_hosts.read_text())
    return lines[0].split()


def one_line(error: pytest.ExceptionInfo[G5kError]) -> str:
    message = str(error.value)
    assert "\n" not in message and PASSPHRASE not in message
    return message


def test_agent_holds_the_key(sshd: Sshd, agent: Agent, key: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The key file is locked and nothing could unlock it (no env, no terminal): only the
    agent's copy can log in."""
    agent.add(key, PASSPHRASE)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
    assert not any(PASSPHRASE in value for value in os.environ.values())
    remote = Remote("127.0.0.1", USER, str(key), sshd.port,
                    known_hosts=str(tmp_path / "known_hosts"))
    try:
        assert remote.run("echo logged in as $(id -un)") == f"logged in as {USER}\n"
    finally:
        remote.close()


def test_agent_key_refused_is_not_asked_again(sshd: Sshd, agent: Agent, key: Path,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent holds the key file's key (per its .pub) and the server refuses it: that is
    the error, not a passphrase the file would need to be offered once more."""
    agent.add(key, PASSPHRASE)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
    other = keygen(tmp_path / "other", "-t", "ed25519")
    (tmp_path / "sshd" / "authorized_keys").write_text(Path(f"{other}.pub").read_text())
    remote = Remote("127.0.0.1", USER, str(key), sshd.port,
                    known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(G5kError) as error:
        remote.run("true")
    assert one_line(error) == (f"SSH {USER}@127.0.0.1:{sshd.port}: login refused with the "
                               f"keys of ssh-agent and {key}: add the public key in your "
                               "Grid'5000 account (api-proxy/account settings)")


@pytest.mark.parametrize("options", [("-t", "ed25519"), ("-t", "rsa", "-b", "2048", "-m", "PEM")],
                         ids=["openssh-format", "pem-format"])
def test_passphrase_from_the_environment(sshd: Sshd, key: Path, tmp_path: Path, options,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    locked = keygen(tmp_path / "locked", *options)
    # the server accepts this key (the fixture's is another one)
    (tmp_path / "sshd" / "authorized_keys").write_text(Path(f"{locked}.pub").read_text())
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    remote = Remote("127.0.0.1", USER, str(locked), sshd.port, say=print,
                    known_hosts=str(tmp_path / "known_hosts"))
    try:
        assert remote.run("echo ok") == "ok\n"
    finally:
        remote.close()
    out, err = capsys.readouterr()
    assert PASSPHRASE not in out + err + caplog.text


def test_locked_key_and_nothing_to_unlock_it(sshd: Sshd, key: Path, tmp_path: Path) -> None:
    remote = Remote("127.0.0.1", USER, str(key), sshd.port,
                    known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(G5kError) as error:
        remote.run("true")
    message = one_line(error)
    assert f"ssh_key: {key} is locked by a passphrase" in message
    assert f"ssh-add {key}" in message and PASSPHRASE_ENV in message and "terminal" in message


@pytest.mark.parametrize("options", [("-t", "ed25519"), ("-t", "rsa", "-b", "2048", "-m", "PEM")],
                         ids=["openssh-format", "pem-format"])
def test_wrong_passphrase(sshd: Sshd, tmp_path: Path, options,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    locked = keygen(tmp_path / "locked", *options)
    monkeypatch.setenv(PASSPHRASE_ENV, "not-" + PASSPHRASE)
    remote = Remote("127.0.0.1", USER, str(locked), sshd.port,
                    known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(G5kError) as error:
        remote.run("true")
    assert one_line(error) == f"ssh_key: wrong passphrase for {locked} (from {PASSPHRASE_ENV})"


def test_missing_key_file(sshd: Sshd, tmp_path: Path) -> None:
    remote = Remote("127.0.0.1", USER, str(tmp_path / "id_nowhere"), sshd.port,
                    known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(G5kError) as error:
        remote.run("true")
    assert one_line(error).startswith(f"ssh_key: {tmp_path / 'id_nowhere'} not found")


def test_prompt_once_on_a_terminal_through_the_jump_host(
        jump_and_node: tuple[Sshd, Sshd], key: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the passphrase is asked, once for the jump host and the frontend."""
    jump, node = jump_and_node
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return PASSPHRASE

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", ask)
    known = str(tmp_path / "known_hosts")
    via = Remote("127.0.0.1", USER, str(key), jump.port, known_hosts=known)
    frontend = Remote("127.0.0.2", USER, str(key), node.port, via=via, known_hosts=known)
    try:
        assert frontend.run("echo behind the jump") == "behind the jump\n"
    finally:
        frontend.close()
    assert prompts == [f"Enter passphrase for key '{key}': "]


def test_first_connection_saves_the_host_key(sshd: Sshd, agent: Agent, key: Path,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    agent.add(key, PASSPHRASE)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
    known = tmp_path / "new-dir" / "known_hosts"  # a known_hosts file the config names
    said: list[str] = []
    for _ in range(2):  # the second connection finds the key saved: nothing added
        remote = Remote("127.0.0.1", USER, str(key), sshd.port, say=said.append,
                        known_hosts=str(known))
        try:
            remote.run("true")
        finally:
            remote.close()
    name = f"[127.0.0.1]:{sshd.port}"  # OpenSSH's form for a port other than 22
    assert saved_entry(known, name) == [name, *host_public_key(tmp_path / "sshd")]
    assert len(known.read_text().splitlines()) == 1
    assert sum("trusted on first use" in line for line in said) == 1


def test_changed_host_key_is_refused(sshd: Sshd, agent: Agent, key: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Another sshd with another host key on the same address and port: refused before
    login, so the command never runs."""
    agent.add(key, PASSPHRASE)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
    known = tmp_path / "known_hosts"
    first = Remote("127.0.0.1", USER, str(key), sshd.port, known_hosts=str(known))
    first.run("true")
    first.close()
    saved = known.read_text()
    sshd.close()
    monkeypatch.setattr(g5k_fakes, "free_port", lambda: sshd.port)
    impostor = start_sshd(tmp_path / "impostor", key)
    marker = tmp_path / "marker"
    try:
        assert host_public_key(tmp_path / "impostor") != host_public_key(tmp_path / "sshd")
        remote = Remote("127.0.0.1", USER, str(key), impostor.port, known_hosts=str(known))
        with pytest.raises(G5kError) as error:
            remote.run(f"touch {marker}")
    finally:
        impostor.close()
    message = one_line(error)
    name = f"[127.0.0.1]:{sshd.port}"
    assert f"the host key of {name} is not the one saved in {known} line 1" in message
    assert f"ssh-keygen -R '{name}' -f {known}" in message
    assert not marker.exists()
    assert known.read_text() == saved


def test_jump_host_and_frontend_alike(jump_and_node: tuple[Sshd, Sshd], agent: Agent,
                                      key: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Both host keys saved, each under its own name (the frontend's as reached through the
    jump host's direct-tcpip channel); then a frontend whose key changed is refused while
    the jump host is still accepted."""
    jump, node = jump_and_node
    agent.add(key, PASSPHRASE)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
    known = tmp_path / "known_hosts"

    def frontend() -> Remote:
        via = Remote("127.0.0.1", USER, str(key), jump.port, known_hosts=str(known))
        return Remote("127.0.0.2", USER, str(key), node.port, via=via, known_hosts=str(known))

    remote = frontend()
    try:
        remote.run("true")
    finally:
        remote.close()
    jump_name, node_name = f"[127.0.0.1]:{jump.port}", f"[127.0.0.2]:{node.port}"
    assert saved_entry(known, jump_name)[1:] == host_public_key(tmp_path / "jump")
    assert saved_entry(known, node_name)[1:] == host_public_key(tmp_path / "node")
    # the frontend's entry now holds another key (the jump host's)
    lines = known.read_text().splitlines()
    known.write_text("".join(f"{node_name} {' '.join(host_public_key(tmp_path / 'jump'))}\n"
                             if line.startswith(node_name) else f"{line}\n" for line in lines))
    marker = tmp_path / "marker"
    remote = frontend()
    try:
        with pytest.raises(G5kError) as error:
            remote.run(f"touch {marker}")
        assert remote.via is not None and remote.via.run("echo jump ok") == "jump ok\n"
    finally:
        remote.close()
    message = one_line(error)
    assert f"127.0.0.2:{node.port}: refused: the host key of {node_name}" in message
    line = 1 + next(i for i, text in enumerate(lines) if text.startswith(node_name))
    assert f"{known} line {line}" in message
    assert not marker.exists()


def test_hashed_known_hosts(jump_and_node: tuple[Sshd, Sshd], key: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A known_hosts hashed by OpenSSH (HashKnownHosts): its entry is recognized, and a new
    one is added hashed too."""
    jump, node = jump_and_node
    known = tmp_path / "known_hosts"
    node_name, jump_name = f"[127.0.0.2]:{node.port}", f"[127.0.0.1]:{jump.port}"
    known.write_text(f"{node_name} {' '.join(host_public_key(tmp_path / 'node'))}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], capture_output=True, check=True,
                   timeout=30)
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    via = Remote("127.0.0.1", USER, str(key), jump.port, known_hosts=str(known))
    remote = Remote("127.0.0.2", USER, str(key), node.port, via=via, known_hosts=str(known))
    try:
        remote.run("true")
    finally:
        remote.close()
    lines = known.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("|1|") for line in lines)
    assert saved_entry(known, jump_name)[1:] == host_public_key(tmp_path / "jump")
    assert saved_entry(known, node_name)[1:] == host_public_key(tmp_path / "node")


def test_a_host_saved_meanwhile_is_checked_again(tmp_path: Path) -> None:
    """Another connection may save the host between the loading of known_hosts and the
    key exchange: the policy reads the file again, never adds a second key for a host."""
    known = tmp_path / "known_hosts"
    saved, other = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    known.write_text(f"[node]:2222 {saved.get_name()} {saved.get_base64()}\n")
    said: list[str] = []
    policy = SaveNewHostKeys(str(known), said.append)
    policy.missing_host_key(paramiko.SSHClient(), "[node]:2222", saved)  # no duplicate
    with pytest.raises(paramiko.BadHostKeyException):
        policy.missing_host_key(paramiko.SSHClient(), "[node]:2222", other)
    assert len(known.read_text().splitlines()) == 1 and not said


def test_a_key_file_is_unlocked_once_for_every_remote(tmp_path: Path, key: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    shared = KeyFile(str(key))
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    loaded = shared.load()
    monkeypatch.delenv(PASSPHRASE_ENV)
    assert shared.load() is loaded
    assert Remote("a", USER, shared).key is shared
    via = Remote("a", USER, str(key))
    assert Remote("b", USER, str(key), via=via).key is via.key
    assert Remote("b", USER, str(tmp_path / "other"), via=via).key is not via.key


@pytest.mark.parametrize(("value", "named"), [
    ({"ssh_key": "~/.ssh/id_ed25519.pub"}, "ssh_key"), ({"ssh_key": " "}, "ssh_key"),
    ({"known_hosts": ""}, "known_hosts"), ({"known_hosts": None}, "known_hosts")])
def test_cluster_file_ssh_errors(tmp_path: Path, value: dict, named: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"site": "nancy", **value}))
    with pytest.raises(G5kError, match=rf"^{path}: {named}: "):
        load_cluster(path)


def test_cluster_file_known_hosts(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"site": "nancy", "known_hosts": "~/g5k_known_hosts"}))
    assert load_cluster(path).known_hosts == "~/g5k_known_hosts"
    path.write_text(yaml.safe_dump({"site": "nancy"}))
    assert load_cluster(path).known_hosts == "~/.ssh/known_hosts"
