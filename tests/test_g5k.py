"""Grid'5000 paths against stand-ins that answer like the real services (see g5k_fakes)."""

from __future__ import annotations

import functools
import getpass
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paramiko
import pytest
import ray
import yaml
from conftest import TINY_SCENARIO, write_space
from g5k_fakes import OAR_STUBS, PASSWORD, SUDO_G5K_STUB, USER, FakeG5kApi, Sshd, free_port
from mlflow.tracking import MlflowClient

from g5k import G5kError, cluster
from g5k.api import Api
from g5k.config import ClusterSpec, load_cluster
from g5k.credentials import Credentials, load_credentials
from g5k.kwollect import PowerMetric, covered_energy, node_metric, series, window_energy
from g5k.ssh import Remote
from g5k.trial_energy import KwollectNodeEnergy
from sweeper.cli import main
from sweeper.errors import SweeperError
from sweeper.orchestrate import run_sweep
from sweeper.space import load_space
from sweeper.study import stored_result
from sweeper.tracking import tracking_uri

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


def sample(node: str, seconds: float, watts: float, metric: str = "wattmetre_power_watt"):
    return {"timestamp": (T0 + timedelta(seconds=seconds)).isoformat(), "device_id": node,
            "metric_id": metric, "value": watts, "labels": {}}


def test_kwollect_trapezoid_with_a_gap() -> None:
    """Instantaneous readings (here a PDU's, period 1 s): trapezoid rule, gaps over two
    periods not bridged. (It used wattmetre samples with a fixed 5 s limit; those are now
    steps, see test_kwollect.py.)"""
    pdu = PowerMetric("pdu_outlet_power_watt", 1.0)
    samples = [sample("gros-1", t, w, pdu.name) for t, w in [(0, 100), (1, 110), (2, 130),
                                                             (3, 130),
                                                             # 10 s without samples
                                                             (13, 90), (14, 100)]]
    samples += [sample("gros-1", 1.5, 999, metric="bmc_node_power_watt")]  # other metric
    points = series(samples, pdu.name)["gros-1"]
    # (100+110)/2 + (110+130)/2 + 130 + (90+100)/2 = 105 + 120 + 130 + 95
    lo = T0.timestamp()
    assert covered_energy(points, pdu, lo, lo + 14) == (pytest.approx(450.0),
                                                         pytest.approx(4.0))
    # a window with fractional edges: power interpolated there, nothing outside counted
    # over 0.5..2.5 s: (105+110)/2 x 0.5 + (110+130)/2 + 130 x 0.5
    inside = window_energy("gros-1", points, pdu,
                           (T0 + timedelta(seconds=0.5), T0 + timedelta(seconds=2.5)))
    assert inside.joules == pytest.approx(53.75 + 120 + 65)
    assert inside.covered_s == pytest.approx(2.0)
    assert math.isnan(window_energy("gros-1", points, pdu,
                                    (T0, T0 + timedelta(seconds=14))).joules)  # 29% covered


@pytest.fixture
def api_server():
    nodes = ["gros-1.nancy.grid5000.fr", "gros-2.nancy.grid5000.fr"]
    samples = [sample("gros-1", t, 100 + t) for t in range(0, 11)]
    server = FakeG5kApi(nodes, samples)
    yield server
    server.close()


def test_rest_reservation_cycle_and_kwollect(api_server: FakeG5kApi, tmp_path: Path) -> None:
    spec = ClusterSpec(site="nancy", cluster="gros", nodes=2, walltime="0:30:00",
                       job_type="night", api_url=api_server.url)
    said: list[str] = []
    api = Api(spec.api_url, Credentials(USER, PASSWORD), say=said.append)
    job_id = api.submit(spec)
    assert job_id == 4242
    _, _, body = api_server.requests[0]
    assert body == {"resources": "nodes=2,walltime=0:30:00", "command": "sleep infinity",
                    "name": "sweeper", "properties": "cluster='gros'", "types": ["night"]}
    assert api.wait_running("nancy", job_id, timeout_s=10, poll_s=0.01) == api_server.nodes
    metric, _ = node_metric(api.cluster_metrics("nancy", "gros"), "gros-1")
    assert metric == PowerMetric("wattmetre_power_watt", 1.0)
    window = (T0, T0 + timedelta(seconds=10))
    samples = api.metrics("nancy", api_server.nodes, [metric.name], *window)
    # wattmetre steps: the samples at 0..9 s hold their second, 100 + t W: 1000 + 45
    got = window_energy("gros-1", series(samples, metric.name)["gros-1"], metric, window)
    assert got.joules == pytest.approx(1045.0)
    _, path, _ = api_server.requests[-1]
    assert "nodes=gros-1%2Cgros-2" in path and "metrics=wattmetre_power_watt" in path
    api.delete("nancy", job_id)
    assert api_server.jobs[job_id]["state"] == "terminated"
    assert not any(PASSWORD in line for line in said)  # the secret is never shown


def test_bad_credentials_and_dry_run(api_server: FakeG5kApi) -> None:
    with pytest.raises(G5kError, match="authentication failed"):
        Api(api_server.url, Credentials(USER, "wrong")).submit(ClusterSpec(site="nancy"))
    before = len(api_server.requests)
    said: list[str] = []
    Api(api_server.url, Credentials(USER, PASSWORD), dry_run=True,
        say=said.append).submit(ClusterSpec(site="nancy", nodes=3))
    assert len(api_server.requests) == before  # nothing sent
    assert said[0].startswith("[dry-run] POST") and "nodes=3" in said[0]


def test_credentials_from_file_and_environment(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("G5K_USER", raising=False)
    monkeypatch.delenv("G5K_PASSWORD", raising=False)
    path = tmp_path / ".python-grid5000.yaml"
    path.write_text(yaml.safe_dump({"username": "bob", "password": "pw"}))
    path.chmod(0o600)  # a password file others can read is refused
    creds = load_credentials(path)
    assert creds == Credentials("bob", "pw") and "pw" not in repr(creds)
    monkeypatch.setenv("G5K_USER", "carol")
    monkeypatch.setenv("G5K_PASSWORD", "pw2")
    assert load_credentials(path).username == "carol"


@pytest.mark.parametrize(("key", "value", "named"), [
    ("walltime", "two hours", "walltime"), ("nodes", "3", "nodes"), ("colour", 1, "colour"),
    ("job_type", "nap", "job_type")])
def test_cluster_file_errors_name_the_key(tmp_path: Path, key: str, value, named: str,
                                          capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"site": "nancy", key: value}))
    assert main(["cluster", "up", "--g5k", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and str(path) in err[0]


@pytest.fixture
def ssh_hosts(tmp_path: Path):
    """A jump host and a frontend/node host: two real sshd, OAR stand-ins on PATH."""
    key = paramiko.RSAKey.generate(2048)
    key_file = tmp_path / "id_rsa"
    key.write_private_key_file(str(key_file))
    stubs = tmp_path / "oar-bin"
    stubs.mkdir()
    for name, text in {**OAR_STUBS, "sudo-g5k": SUDO_G5K_STUB}.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/local/bin:/usr/bin:/bin", "OAR_LOG": str(tmp_path / "oar.log"),
           "OAR_STATE": str(tmp_path / "oar-state"), "OAR_NODES": "127.0.0.1,127.0.0.2",
           "SUDO_LOG": str(tmp_path / "sudo.log")}
    public = f"{key.get_name()} {key.get_base64()}"
    jump, node = Sshd(tmp_path / "jump", public, env), Sshd(tmp_path / "node", public, env)
    yield key_file, jump, node, tmp_path
    jump.close()
    node.close()


def test_ssh_through_a_jump_host(ssh_hosts) -> None:
    key_file, jump, node, _ = ssh_hosts
    user = getpass.getuser()
    known = str(ssh_hosts[3] / "known_hosts")
    via = Remote("127.0.0.1", user, str(key_file), jump.port, known_hosts=known)
    remote = Remote("127.0.0.1", user, str(key_file), node.port, via=via, known_hosts=known)
    assert remote.run("echo hello from $(hostname)").startswith("hello from")
    with pytest.raises(G5kError, match="exit code 3"):
        remote.run("exit 3")
    remote.close()
    unknown = ssh_hosts[3] / "unknown_key"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(unknown))
    stranger = Remote("127.0.0.1", user, str(unknown), node.port, known_hosts=known)
    with pytest.raises(G5kError, match="refused"):
        stranger.run("true")


@pytest.fixture
def ray_dir():
    """A short node-local directory for the clusters' Ray temp dirs (socket paths are
    limited to ~100 characters), removed afterwards."""
    path = tempfile.mkdtemp(prefix="swr", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ray_group_alive(pidfile: Path) -> bool:
    pgid = int(pidfile.read_text())
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow  # ~40 s: a second real Ray, its head and worker started over SSH
def test_cluster_up_status_down_with_real_ray(ssh_hosts, ray_dir: str, ray_cluster: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """oarsub on the frontend, then a real Ray head on 127.0.0.1 and a real worker on
    127.0.0.2 started over SSH through the jump host; `down` stops exactly those (the
    test session's own Ray is untouched) and gives the job back."""
    key_file, jump, node, root = ssh_hosts
    python_env = Path(sys.executable).parent.parent
    if not (python_env / "bin" / "ray").exists():
        pytest.skip(f"no ray executable beside {sys.executable}")
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(root / "state.json"))
    monkeypatch.setenv("G5K_USER", getpass.getuser())
    monkeypatch.setenv("G5K_PASSWORD", "unused")
    spec = ClusterSpec(site="nancy", cluster="gros", nodes=2, jump_host="127.0.0.1",
                       jump_port=jump.port, frontend="127.0.0.1", ssh_port=node.port,
                       ssh_key=str(key_file), python_env=str(python_env),
                       known_hosts=str(root / "known_hosts"),
                       reservation_method="oarsub", ray_port=free_port(),
                       ray_client_port=free_port(), dashboard_port=free_port(),
                       dashboard=False, ray_cpus=1, ray_dir=ray_dir, rapl_readable=True,
                       cpufreq_writable=True, cpu_governor="performance")
    said: list[str] = []
    state = cluster.up(spec, say=said.append, timeout_s=60)
    pidfiles = [Path(ray_dir) / "777-0" / "ray.pid", Path(ray_dir) / "777-1" / "ray.pid"]
    try:
        assert state.job_id == 777 and state.nodes == ["127.0.0.1", "127.0.0.2"]
        oar_log = (root / "oar.log").read_text()
        assert "-l nodes=2,walltime=1:00:00" in oar_log and "cluster='gros'" in oar_log
        assert all(ray_group_alive(p) for p in pidfiles)
        sudo = (root / "sudo.log").read_text()  # on each node, before Ray started
        assert sudo.count("sudo-g5k chmod a+r /sys/class/powercap/intel-rapl:") == 2
        assert sudo.count("sudo-g5k chmod a+w /sys/devices/system/cpu/cpu") == 2
        assert sudo.count("sudo-g5k tee /sys/devices/system/cpu/cpu") == 2
        assert sudo.count("  stdin: performance") == 2
        # a driver of its own sees both nodes, each offering the one CPU asked for
        driver = (f"import ray; ray.init(address={state.ray_address()!r}, "
                  "log_to_driver=False); alive = [n for n in ray.nodes() if n['Alive']]; "
                  "print(len(alive), sum(n['Resources'].get('CPU', 0) for n in alive))")
        seen = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                              timeout=120, env={**os.environ, **cluster.ray_client_env()})
        assert seen.stdout.split()[-2:] == ["2", "2.0"], seen.stderr[-2000:]
        command = (f"ssh -J {getpass.getuser()}@127.0.0.1:{jump.port} -p {node.port} -N "
                   f"-L {spec.dashboard_port}:127.0.0.1:{spec.dashboard_port} "
                   f"{getpass.getuser()}@127.0.0.1")
        assert any(command in line for line in said), said[-1]
        assert "Active:" in cluster.status()
    finally:
        cluster.down(say=said.append)
    assert not any(ray_group_alive(p) for p in pidfiles)
    # the test session's own Ray is untouched
    assert ray.get(ray.remote(lambda: "still here").remote()) == "still here"
    assert "oardel 777" in (root / "oar.log").read_text()
    assert not (root / "state.json").exists()


def test_dry_run_shows_every_command_and_runs_none(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"site": "nancy", "cluster": "gros", "nodes": 2,
                                    "rapl_readable": True, "cpu_governor": "powersave",
                                    "api_url": "http://127.0.0.1:9/unreachable"}))
    assert main(["cluster", "up", "--g5k", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(line.startswith("[dry-run]") for line in out)
    assert out[0].startswith("[dry-run] POST http://127.0.0.1:9/unreachable/sites/nancy/jobs")
    for node in ("<node-1>", "<node-2>"):
        on_node = [line for line in out if f"@{node}:22: " in line]
        steps = ["sudo-g5k chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj",
                 "echo powersave | sudo-g5k tee /sys/devices/system/cpu/",
                 "~/sweeper-venv/bin/ray start "]  # ~ left to the node's shell
        at = [next(i for i, line in enumerate(on_node) if step in line) for step in steps]
        assert at == sorted(at), on_node  # settings first, then Ray
    assert "--head" in next(line for line in out if "ray start" in line)
    assert not (tmp_path / "state.json").exists()
    path.write_text(yaml.safe_dump({"site": "nancy", "cpu_governor": "turbo"}))
    assert main(["cluster", "up", "--g5k", str(path), "--dry-run"]) == 2
    assert "cpu_governor" in capsys.readouterr().err


def test_a_half_started_cluster_is_torn_down(ssh_hosts, ray_dir: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    key_file, jump, node, root = ssh_hosts
    env_dir = root / "venv-broken"
    (env_dir / "bin").mkdir(parents=True)
    (env_dir / "bin" / "ray").write_text("#!/bin/sh\necho 'port in use' >&2\nexit 1\n")
    (env_dir / "bin" / "ray").chmod(0o755)
    (env_dir / "bin" / "python").symlink_to(sys.executable)  # the driver's own versions
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(root / "state.json"))
    spec = ClusterSpec(site="nancy", nodes=1, jump_host="127.0.0.1", jump_port=jump.port,
                       frontend="127.0.0.1", ssh_port=node.port, ssh_key=str(key_file),
                       known_hosts=str(root / "known_hosts"),
                       python_env=str(env_dir), reservation_method="oarsub",
                       user=getpass.getuser(), ray_dir=ray_dir)
    with pytest.raises(G5kError, match=r"Ray head on 127.0.0.1 did not start: port in use"):
        cluster.up(spec, say=lambda _line: None, timeout_s=60)
    assert "oardel 777" in (root / "oar.log").read_text()  # the job was given back
    assert not (root / "state.json").exists()


def test_example_cluster_file_is_valid() -> None:
    spec = load_cluster(Path(__file__).parents[1] / "g5k" / "examples" / "nancy-gros.yaml")
    assert spec.site == "nancy" and spec.oar_properties == "cluster='gros'"
    assert os.path.basename(spec.python_env) == "sweeper-venv"


def test_dashboard_forward_through_the_jump_host(ssh_hosts,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`cluster forward`: a local port carried by paramiko through the jump host to a web
    server on the head's loopback (here: a small HTTP server standing in for the dashboard)."""
    key_file, jump, node, root = ssh_hosts
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("ray dashboard stand-in")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root / "www"))
    web = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(root / "state.json"))
    spec = ClusterSpec(site="nancy", jump_host="127.0.0.1", jump_port=jump.port,
                       ssh_port=node.port, ssh_key=str(key_file), user=getpass.getuser(),
                       known_hosts=str(root / "known_hosts"),
                       dashboard_port=web.server_address[1])
    cluster.ClusterState(asdict(spec), 777, nodes=["127.0.0.2"]).save()
    forward = cluster.open_forward(local_port=0)
    try:
        for _ in range(2):  # one SSH channel per connection
            with urllib.request.urlopen(f"http://127.0.0.1:{forward.port}/index.html",
                                        timeout=20) as reply:
                assert reply.read() == b"ray dashboard stand-in"
        with pytest.raises(G5kError, match="choose another local port"):
            cluster.open_forward(local_port=forward.port)
    finally:
        forward.close()
        web.shutdown()


def test_trial_window_joules_from_kwollect_wait_for_late_samples() -> None:
    """The node energy source integrates the trial's nodes over its window, asks again
    while Kwollect has not caught up with the window's end, then reports what is missing."""
    samples = [sample("gros-1", t, 100 + t) for t in range(0, 31)]
    samples += [sample("gros-2", t, 200) for t in range(0, 16)]  # stops 15 s early
    server = FakeG5kApi(["gros-1.nancy.grid5000.fr"], samples)
    try:
        api = Api(server.url, Credentials(USER, PASSWORD))
        source = KwollectNodeEnergy(api, "nancy", lag_s=0.5, poll_s=0.1)
        reading = source(["gros-1.nancy.grid5000.fr"], T0 + timedelta(seconds=10),
                         T0 + timedelta(seconds=20))
        # wattmetre steps: the samples at 10..19 s hold their second, 110..119 W: 10 x 114.5
        assert reading["joules"] == pytest.approx(1145.0)
        assert reading["metric"] == "wattmetre_power_watt"  # preferred over the BMC's
        assert reading["nodes"] == ["gros-1"] and "gros-1" in reading["meter"]
        asked = sum("/metrics?" in path for _, path, _ in server.requests)
        assert asked == 1  # complete at once: no waiting
        late = source(["gros-2"], T0 + timedelta(seconds=10), T0 + timedelta(seconds=25))
        # 10..16 s covered (the sample at 15 s holds its second): 40% of the window is not
        # enough, so NaN and why (it used to say 1000 J for the covered part alone)
        assert math.isnan(late["joules"])
        assert late["reason"].startswith("gros-2: 40% of the window covered")
        assert late["covered_s"] == {"gros-2": pytest.approx(6.0)}
        assert late["uncovered_s"] == {"gros-2": pytest.approx(9.0)}  # not yet published
        assert sum("/metrics?" in path for _, path, _ in server.requests) > asked + 1
    finally:
        server.close()


def test_sweep_records_node_joules_of_each_trial(tmp_path: Path, ray_cluster: str) -> None:
    """`isolation: node`: after each trial the driver reads the power of the node it ran
    on over its window (here a Kwollect stand-in: a constant 150 W on this machine) and
    records the joules as a measured component, in Optuna and MLflow."""
    host = platform.node().split(".")[0]
    now = datetime.now(UTC)
    samples = [{"timestamp": (now + timedelta(seconds=s)).isoformat(), "device_id": host,
                "metric_id": "wattmetre_power_watt", "value": 150.0, "labels": {}}
               for s in range(-60, 900)]
    server = FakeG5kApi([host], samples)
    space = load_space(write_space(tmp_path / "node.yaml",
                                   scenario={**TINY_SCENARIO, "isolation": "node"},
                                   budget={"trials": 1, "parallel": 1}))
    source = KwollectNodeEnergy(Api(server.url, Credentials(USER, PASSWORD)), "nancy",
                                cluster="gros", lag_s=5, poll_s=0.5)
    try:
        outcome = run_sweep(space, tmp_path / "store", sweep="g5k", ray_address=ray_cluster,
                            node_energy=source)
    finally:
        server.close()
    result = stored_result(outcome.study.trials[0])
    assert result is not None and result.status == "ok", result and result.reason
    reading = result.info["node_energy"]
    window_s = (datetime.fromisoformat(reading["end_utc"]) -
                datetime.fromisoformat(reading["start_utc"])).total_seconds()
    assert reading["nodes"] == [host] and reading["metric"] == "wattmetre_power_watt"
    # edges interpolated; covered_s comes from epoch-second floats (about 0.24 us apart at
    # today's epoch), so a short window cannot match the timedelta to a millionth of itself
    assert reading["covered_s"][host] == pytest.approx(window_s, abs=1e-6)
    assert result.node_energy_j == pytest.approx(150.0 * reading["covered_s"][host])
    assert result.meters["node_energy_j"].kind == "measured"
    run = MlflowClient(tracking_uri(tmp_path / "store")).get_run(outcome.trial_runs[0])
    space = load_space(write_space(tmp_path / "objective.yaml", objectives=[
        {"metric": "accuracy", "direction": "maximize"},
        {"metric": "node_energy_j", "direction": "minimize"}]))
    with pytest.raises(SweeperError, match="node_energy_j: no node energy source"):
        run_sweep(space, tmp_path / "store2", ray_address=ray_cluster)
    assert run.data.tags["sweeper.meter_kind.node_energy_j"] == "measured"
    assert run.data.metrics["final.node_energy_j"] == pytest.approx(result.node_energy_j)


def test_a_key_that_cannot_log_in_reserves_nothing(ssh_hosts, ray_dir: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _, jump, node, root = ssh_hosts
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(root / "state.json"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    spec = ClusterSpec(site="nancy", nodes=1, jump_host="127.0.0.1", jump_port=jump.port,
                       frontend="127.0.0.1", ssh_port=node.port,
                       ssh_key=str(root / "no-such-key"), known_hosts=str(root / "known_hosts"),
                       python_env=str(root / "venv"), reservation_method="oarsub",
                       user=getpass.getuser(), ray_dir=ray_dir)
    with pytest.raises(G5kError, match=r"^ssh_key: .*no-such-key"):
        cluster.up(spec, say=lambda _line: None, timeout_s=60)
    oar_log = root / "oar.log"
    assert not oar_log.exists() or "oarsub" not in oar_log.read_text()
    assert not (root / "state.json").exists()
