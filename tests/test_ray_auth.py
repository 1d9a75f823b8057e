"""Ray with a credential: the Ray `sweeper cluster up` starts lets in only a client with the
cluster's token, and the local Ray `sweeper pareto` starts listens on loopback only."""

from __future__ import annotations

import ipaddress
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from g5k_fakes import free_port

from g5k import G5kError, cluster, raycluster
from g5k.config import ClusterSpec

PYTHON_ENV = Path(sys.executable).parent.parent
DRIVER = ("import ray; ray.init(address={address!r}, log_to_driver=False); "
          "print(ray.get(ray.remote(lambda: 41 + 1).remote()))")
# as `sweeper pareto --cluster` does: Ray imported first, the token's environment set after
SWEEP_DRIVER = ("import os, ray; from sweeper.orchestrate import start_ray; "
                "from g5k.raycluster import client_env; from pathlib import Path; "
                "os.environ.update(client_env(Path({token!r}))); start_ray({address!r}); "
                "print(ray.get(ray.remote(lambda: 41 + 1).remote()))")


def _environment(**extra: str) -> dict[str, str]:
    """This environment without any Ray token or address, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    return {**env, **extra}


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass  # the process ended meanwhile
    return inodes


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def listening(pids: set[int]) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address,
                                            int, str]]:
    """The TCP sockets these processes listen on: (address, port, command), from
    /proc/net/tcp{,6} (state 0A) and the socket inodes in /proc/<pid>/fd."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or int(fields[9]) not in owner:
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)
            if sys.byteorder == "little":  # each 32-bit word is printed in host order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            found.append((address, int(hex_port, 16), _command(owner[int(fields[9])])))
    return found


def test_token_file_is_fresh_and_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".sweeper" / "ray-token-x"
    raycluster.new_token(path)
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 64
    raycluster.new_token(path)
    assert path.read_text() != first and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert raycluster.client_env(path) == {"RAY_AUTH_MODE": "token",
                                           "RAY_AUTH_TOKEN_PATH": str(path)}
    path.chmod(0o640)
    with pytest.raises(G5kError) as refused:
        raycluster.client_env(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and "640" in message
    assert first not in message and path.read_text() not in message
    with pytest.raises(G5kError, match="no Ray token"):
        raycluster.client_env(tmp_path / "missing")


def test_driver_token_sits_beside_the_state_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(tmp_path / "state.json"))
    token = cluster.ray_token_file()
    assert token.parent == tmp_path and token.name.startswith("ray-token-state-")
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(tmp_path / "other" / "state.json"))
    assert cluster.ray_token_file().name != token.name  # another state file, another token
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(tmp_path / "state.json"))
    raycluster.new_token(token)
    assert cluster.ray_client_env()["RAY_AUTH_TOKEN_PATH"] == str(token)
    session = cluster.Session(ClusterSpec(site="nancy", python_env="~/venv"), dry_run=True,
                              say=lambda _line: None)
    assert session.ray_token == f'"$HOME"/.sweeper/{token.name}'
    assert session.ray_command("status") == (
        f'RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$HOME"/.sweeper/{token.name} '
        "~/venv/bin/ray status")


def test_cluster_ray_lets_in_only_the_token(tmp_path: Path) -> None:
    """The `ray start` command line and environment `cluster up` runs on a node, run here
    (HOME a temp dir holding the token): a client without the token is refused, one with it
    runs a task; the token is on no command line."""
    if not (PYTHON_ENV / "bin" / "ray").exists():
        pytest.skip(f"no ray executable beside {sys.executable}")
    home = tmp_path / "home"
    token_file = home / ".sweeper" / "ray-token-test"
    raycluster.new_token(token_file)
    token = token_file.read_text()
    ray_dir = tempfile.mkdtemp(prefix="swa", dir="/tmp")  # short: Ray's socket paths
    spec = ClusterSpec(site="local", python_env=str(PYTHON_ENV), ray_port=free_port(),
                       ray_client_port=free_port(), dashboard_port=free_port(),
                       dashboard=False, ray_cpus=1, ray_dir=ray_dir)
    node = raycluster.ray_node(spec, 1, 0, "127.0.0.1")
    address = f"127.0.0.1:{spec.ray_port}"
    command = raycluster.start_command(spec, node, address,
                                       raycluster.home_token(token_file.name), timeout_s=90)
    count = raycluster.count_nodes_command(spec, address, 1,
                                           raycluster.home_token(token_file.name))
    assert token not in command and token not in count
    try:
        started = subprocess.run(["bash", "-c", command], env=_environment(HOME=str(home)),
                                 capture_output=True, text=True, timeout=150)
        assert started.returncode == 0, started.stderr[-2000:]
        pid = int(Path(node.pidfile).read_text())
        processes = {pid} | descendants(pid)
        commands = [_command(p) for p in processes]
        assert any("gcs_server" in c for c in commands) and any("raylet" in c for c in commands)
        assert not any(token in c for c in commands)
        # a short retry loop: Ray tries 20 times, a second apart, by default
        refused = subprocess.run([sys.executable, "-c", DRIVER.format(address=address)],
                                 env=_environment(RAY_NUM_REDIS_GET_RETRIES="3"),
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0
        assert "AuthenticationError" in refused.stderr, refused.stderr[-2000:]
        let_in = subprocess.run([sys.executable, "-c", DRIVER.format(address=address)],
                                env=_environment(**raycluster.client_env(token_file)),
                                capture_output=True, text=True, timeout=120)
        assert let_in.stdout.split()[-1:] == ["42"], let_in.stderr[-2000:]
        sweep = SWEEP_DRIVER.format(token=str(token_file), address=address)
        let_in = subprocess.run([sys.executable, "-c", sweep], env=_environment(),
                                capture_output=True, text=True, timeout=120)
        assert let_in.stdout.split()[-1:] == ["42"], let_in.stderr[-2000:]
        assert token not in Path(node.log).read_text()
    finally:
        stopped = subprocess.run(["bash", "-c", raycluster.stop_command(node, grace_s=20)],
                                 capture_output=True, timeout=60)
        if stopped.returncode != 0 and Path(node.pidfile).exists():
            os.killpg(int(Path(node.pidfile).read_text()), signal.SIGKILL)
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_cluster_ray_refuses_a_token_file_open_to_others(tmp_path: Path) -> None:
    home = tmp_path / "home"
    token_file = home / ".sweeper" / "ray-token-test"
    raycluster.new_token(token_file)
    token_file.chmod(0o644)
    spec = ClusterSpec(site="local", python_env=str(PYTHON_ENV), ray_dir=str(tmp_path))
    node = raycluster.ray_node(spec, 1, 0, "127.0.0.1")
    command = raycluster.start_command(spec, node, "127.0.0.1:1",
                                       raycluster.home_token(token_file.name))
    started = subprocess.run(["bash", "-c", command], env=_environment(HOME=str(home)),
                             capture_output=True, text=True, timeout=30)
    assert started.returncode == 1 and not Path(node.pidfile).exists()
    assert started.stderr.strip() == (f"{token_file}: mode 644, open to group or others: Ray "
                                      f"token refused (chmod 600 {token_file})")


LOCAL_RAY = """
import sys
import ray
from sweeper.orchestrate import start_ray
start_ray(None, num_cpus=1, dashboard=False)
print(ray.get(ray.remote(lambda: "ready").remote()), flush=True)
sys.stdin.readline()
ray.shutdown()
"""


def test_local_ray_listens_on_loopback_only() -> None:
    """The Ray `sweeper pareto` starts (no --ray-address): every socket its processes
    listen on is bound to a loopback address."""
    driver = subprocess.Popen([sys.executable, "-c", LOCAL_RAY], env=_environment(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([driver.stdout], [], [], 120)
        line = driver.stdout.readline() if ready else ""
        assert line.strip() == "ready", driver.stderr.read() if driver.poll() is not None \
            else "no answer in 120 s"
        sockets = listening({driver.pid} | descendants(driver.pid))
        owners = " ".join(command for _, _, command in sockets)
        assert "gcs_server" in owners and "raylet" in owners, sockets
        exposed = [s for s in sockets if not s[0].is_loopback]
        assert not exposed, exposed
    finally:
        try:
            driver.communicate("\n", timeout=60)  # ray.shutdown() stops its processes
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.communicate()


def test_a_sweep_on_the_cluster_refuses_a_token_file_open_to_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """`sweeper pareto --cluster` with the cluster's token readable by others: one line
    naming the file, exit 2, and no store made (nothing connected, nothing run)."""
    from dataclasses import asdict

    from conftest import write_space

    from sweeper.cli import main

    monkeypatch.setenv("SWEEPER_G5K_STATE", str(tmp_path / "state" / "g5k-cluster.json"))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    cluster.ClusterState(asdict(ClusterSpec(site="local")), 1, ["127.0.0.1"]).save()
    token_file = cluster.ray_token_file()
    raycluster.new_token(token_file)
    token_file.chmod(0o644)
    store = tmp_path / "store"
    assert main(["pareto", "--space", str(write_space(tmp_path / "s.yaml")), "--cluster",
                 "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{token_file}: mode 644, open to group or others" in err[0], err
    assert not store.exists()
