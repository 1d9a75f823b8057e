"""The Grid'5000 API as it is: TLS under the Grid'5000 CA, python-grid5000's credentials
file, OAR's job states, types, queues and projects, and a wait that keeps the job; against
the stand-in (g5k_fakes) over real HTTP(S) on loopback."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
import pytest
import yaml
from g5k_fakes import JOB_STATES as STAND_IN_STATES
from g5k_fakes import PASSWORD, USER, FakeG5kApi

from g5k import G5kError, cluster
from g5k.api import FAILED_STATES, JOB_STATES, SYSTEM_CA_BUNDLE, Api, tls_verify
from g5k.config import ClusterSpec, load_cluster
from g5k.credentials import Credentials, load_credentials
from sweeper.cli import main

NODES = ["gros-1.nancy.grid5000.fr", "gros-2.nancy.grid5000.fr"]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own (for ~/.python-grid5000.yaml), a state file of its own, and no
    credentials or CA bundle from the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(tmp_path / "state.json"))
    for name in ("G5K_USER", "G5K_PASSWORD", "G5K_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def servers():
    started: list[FakeG5kApi] = []

    def start(**options) -> FakeG5kApi:
        server = FakeG5kApi(NODES, [], **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def credentials_file(home: Path, mode: int = 0o600, **keys) -> Path:
    path = home / ".python-grid5000.yaml"
    path.write_text(yaml.safe_dump(keys))
    path.chmod(mode)
    return path


def cluster_file(tmp_path: Path, **keys) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"site": "nancy", "jump_host": None, **keys}))
    return path


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# TLS: the Grid'5000 CA is in the system bundle, not in certifi's

def test_tls_under_the_grid5000_ca_needs_the_system_bundle(
        servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = servers(tls=True)
    assert server.url.startswith("https://")
    monkeypatch.setenv("G5K_CA_BUNDLE", str(server.ca_path))  # the "system bundle"
    api = Api(server.url, Credentials(USER, PASSWORD))
    assert api.verify == str(server.ca_path)
    job_id = api.submit(ClusterSpec(site="nancy"))
    assert api.wait_running("nancy", job_id, timeout_s=10, poll_s=0.01) == NODES
    assert api.cluster_metrics("nancy", "gros")  # the reference API, for Kwollect
    # without it (a machine with no system bundle): requests' own, certifi's
    monkeypatch.setenv("G5K_CA_BUNDLE", str(tmp_path / "no-such-bundle.crt"))
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    before = len(server.requests)
    with pytest.raises(G5kError) as refused:
        Api(server.url, Credentials(USER, PASSWORD)).job("nancy", job_id)
    message = str(refused.value)
    assert "\n" not in message and "cannot verify the TLS certificate" in message
    assert "certifi" in message and "Grid'5000 CA" in message and SYSTEM_CA_BUNDLE in message
    assert len(server.requests) == before  # the handshake failed: no request was read


def test_the_system_bundle_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = SYSTEM_CA_BUNDLE if Path(SYSTEM_CA_BUNDLE).is_file() else True
    assert tls_verify() == expected
    assert tls_verify(Credentials(verify_ssl=False)) is False


# The credentials file, as python-grid5000 reads it

def test_a_file_with_only_verify_ssl_is_accepted_and_honoured(
        servers, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a frontend: no password, the Grid'5000 CA named in the file. The default mode of
    a new file (0644) is fine when it holds no password."""
    server = servers(tls=True, open_access=True)
    monkeypatch.setenv("G5K_CA_BUNDLE", str(tmp_path / "no-such-bundle.crt"))
    credentials_file(home, 0o644, verify_ssl=str(server.ca_path))
    credentials = load_credentials()
    assert credentials == Credentials(verify_ssl=str(server.ca_path))
    api = Api(server.url, credentials)
    assert api.submit(ClusterSpec(site="nancy")) == 4242
    assert server.headers_seen == [""]  # no Authorization header: none to send


def test_verify_ssl_false_is_honoured(servers, home: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server = servers(tls=True)
    monkeypatch.setenv("G5K_CA_BUNDLE", str(tmp_path / "no-such-bundle.crt"))
    credentials_file(home, username=USER, password=PASSWORD, verify_ssl=False)
    said: list[str] = []
    api = Api(server.url, load_credentials(), say=said.append)
    assert api.verify is False
    api.submit(ClusterSpec(site="nancy"))
    api.job("nancy", 4242)
    assert [line for line in said if "not verified" in line] == [
        f"TLS certificate of {server.url} not verified (verify_ssl: false)"]  # said once


def test_uri_is_honoured(servers, home: Path) -> None:
    """`uri` in the file is the API for a cluster file without api_url."""
    server = servers()
    credentials_file(home, username=USER, password=PASSWORD, uri=server.url)
    session = cluster.Session(ClusterSpec(site="nancy", jump_host=None), say=lambda _: None)
    assert session.api.base_url == server.url
    assert session.reserve() == (4242, True)
    assert len(server.posted) == 1
    # an api_url in the cluster file wins
    other = cluster.Session(ClusterSpec(site="nancy", jump_host=None,
                                        api_url="http://127.0.0.1:9/x"), say=lambda _: None)
    assert other.api.base_url == "http://127.0.0.1:9/x"


@pytest.mark.parametrize(("mode", "keys", "named"), [
    (0o644, {"username": USER, "password": PASSWORD}, "mode 0644"),
    (0o640, {"username": USER, "password": PASSWORD}, "mode 0640"),
    (0o666, {"verify_ssl": False}, "mode 0666"),
    (0o600, {"username": USER}, "username and password"),
    (0o600, {"verify_ssl": "/no/such/bundle.crt"}, "verify_ssl"),
    (0o600, {"username": USER, "password": PASSWORD, "sslcert": "c.pem"}, "sslcert")])
def test_a_credentials_file_refused_in_one_line(servers, home: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture, mode: int,
                                                keys: dict, named: str) -> None:
    """Exit 2 and one line naming the file; nothing reaches the API. (python-grid5000
    checks no mode when reading; its grid5000-auth writes the file 600.)"""
    server = servers()
    path = credentials_file(home, mode, **keys)
    assert main(["cluster", "up", "--g5k", str(cluster_file(tmp_path, api_url=server.url))]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and named in line
    assert PASSWORD not in line
    assert server.requests == []


# Job states

@pytest.mark.parametrize("states", [
    ["waiting", "toackreservation", "tolaunch", "launching", "running"],
    ["hold", "waiting", "running"],
    ["waiting", "launching", "running", "suspended"]])
def test_a_job_runs_through_oars_states(servers, states: list[str]) -> None:
    server = servers(states=states)
    api = Api(server.url, Credentials(USER, PASSWORD))
    job_id = api.submit(ClusterSpec(site="nancy"))
    assert api.wait_running("nancy", job_id, timeout_s=10, poll_s=0.01) == NODES


@pytest.mark.parametrize("failed", FAILED_STATES)
def test_a_job_ended_before_running_fails_the_wait(servers, failed: str) -> None:
    server = servers(states=["waiting", failed])
    api = Api(server.url, Credentials(USER, PASSWORD))
    job_id = api.submit(ClusterSpec(site="nancy"))
    with pytest.raises(G5kError, match=f"ended in state '{failed}' before running"):
        api.wait_running("nancy", job_id, timeout_s=10, poll_s=0.01)


def test_the_states_are_oars() -> None:
    assert JOB_STATES == STAND_IN_STATES and "tolaunch_error" not in JOB_STATES
    assert set(FAILED_STATES) <= set(JOB_STATES)


# Job types, queues and projects

def test_types_queue_and_project_are_submitted(servers, tmp_path: Path) -> None:
    server = servers()
    spec = load_cluster(cluster_file(tmp_path, cluster="gros", job_types=["night",
                                                                          "allow_classic_ssh"],
                                     queue="abaca", project="fl-energy",
                                     api_url=server.url))
    Api(spec.api_url, Credentials(USER, PASSWORD)).submit(spec)
    assert server.posted == [{"resources": "nodes=1,walltime=1:00:00",
                              "command": "sleep infinity", "name": "sweeper",
                              "properties": "cluster='gros'",
                              "types": ["night", "allow_classic_ssh"], "queue": "abaca",
                              "project": "fl-energy"}]
    job = server.jobs[4242]
    assert (job["queue"], job["project"], job["types"]) == (
        "abaca", "fl-energy", ["night", "allow_classic_ssh"])
    # the older one-type key still works, after the list
    older = ClusterSpec(site="nancy", job_types=["night"], job_type="besteffort")
    assert older.oar_types == ["night", "besteffort"]


def test_exotic_is_added_when_the_reference_api_says_so(servers, home: Path) -> None:
    server = servers(exotic=("troll",))
    credentials_file(home, username=USER, password=PASSWORD)
    spec = ClusterSpec(site="grenoble", cluster="troll", job_types=["night"],
                       jump_host=None, api_url=server.url)
    with pytest.raises(G5kError, match="exotic"):  # what Grid'5000 does without it
        Api(server.url, Credentials(USER, PASSWORD)).submit(spec)
    session = cluster.Session(spec, say=lambda _: None)
    assert session.reserve() == (4242, True)
    assert server.posted[-1]["types"] == ["night", "exotic"]
    assert [path for method, path, _ in server.requests if method == "GET"] == [
        "/stable/sites/grenoble/clusters/troll"]
    # not exotic: types as given
    cluster.Session(ClusterSpec(site="nancy", cluster="gros", jump_host=None,
                                api_url=server.url), say=lambda _: None).reserve()
    assert "types" not in server.posted[-1]


@pytest.mark.parametrize(("keys", "expected"), [
    ({"queue": "fast"}, "queue: 'fast' is not one of default, production, abaca, besteffort, "
                        "testing"),
    ({"queue": "admin"}, "queue: 'admin' is not one of"),
    ({"job_types": ["deploy"]}, "job_types: deploy: nothing runs kadeploy here; sudo-g5k is "
                                "unavailable in deploy jobs"),
    ({"job_type": "deploy"}, "job_type: deploy: nothing runs kadeploy here"),
    ({"job_types": ["nap"]}, "job_types: 'nap' is not one of"),
    ({"job_types": "night"}, "job_types: must be a list of str"),
    ({"queue": "besteffort", "reservation": "2026-12-01 19:00:00"},
     "reservation: a besteffort job cannot be an advance reservation")])
def test_a_job_refused_at_load_reserves_nothing(servers, home: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture, keys: dict,
                                                expected: str) -> None:
    server = servers()
    credentials_file(home, username=USER, password=PASSWORD)
    path = cluster_file(tmp_path, api_url=server.url, **keys)
    assert main(["cluster", "up", "--g5k", str(path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"sweeper: error: {path}: ") and expected in line
    assert server.requests == []  # nothing POSTed, nothing asked


def test_a_queue_the_cluster_does_not_take_reserves_nothing(servers, home: Path,
                                                           tmp_path: Path,
                                                           capsys: pytest.CaptureFixture
                                                           ) -> None:
    """A queue OAR knows but the cluster does not take (the reference API's `queues`):
    `cluster up` asks the reference API, then stops in one line naming the key."""
    server = servers()  # the stand-in's clusters take admin and default only
    credentials_file(home, username=USER, password=PASSWORD)
    (home / ".ssh").mkdir(exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f",
                    str(home / ".ssh" / "id_rsa")], check=True)  # a login key at hand
    path = cluster_file(tmp_path, api_url=server.url, cluster="gros", queue="production")
    assert main(["cluster", "up", "--g5k", str(path)]) == 2
    line = one_error_line(capsys)
    assert "queue: gros takes jobs in default, not production: set queue: default" in line
    assert [method for method, _, _ in server.requests] == ["GET"]  # nothing POSTed


def test_no_login_key_at_hand_reserves_nothing(servers, home: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No ssh-agent and no key file: `cluster up` stops in one line before it asks the API
    anything (a job reserved without a way to log in would only be deleted again)."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    server = servers()
    credentials_file(home, username=USER, password=PASSWORD)
    path = cluster_file(tmp_path, api_url=server.url, cluster="gros")
    assert main(["cluster", "up", "--g5k", str(path)]) == 2
    line = one_error_line(capsys)
    assert "ssh_key: " in line and "not found" in line, line
    assert server.requests == []


def test_a_refused_job_is_not_submitted_even_without_the_file(servers) -> None:
    server = servers()
    api = Api(server.url, Credentials(USER, PASSWORD))
    for spec in (ClusterSpec(site="nancy", queue="fast"),
                 ClusterSpec(site="nancy", job_types=["deploy"])):
        with pytest.raises(G5kError, match="not submitted: "):
            api.submit(spec)
    assert server.requests == []


def test_oarsub_gets_each_type_the_queue_and_the_project() -> None:
    said: list[str] = []
    spec = ClusterSpec(site="nancy", cluster="gros", job_types=["night", "exotic"],
                       queue="production", project="fl-energy", jump_host=None,
                       reservation_method="oarsub")
    cluster.Session(spec, dry_run=True, say=said.append).reserve()
    assert any("oarsub -l nodes=1,walltime=1:00:00 -p " in line and line.endswith(
        "-t night -t exotic -q production --project fl-energy 'sleep infinity'")
        for line in said), said


# Waiting: a wait over the timeout keeps the job

def test_a_wait_timeout_keeps_the_job_for_status_and_down(
        servers, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An advance reservation hours ahead stays "waiting": `up` gives up waiting, but the
    job stays, and is recorded where `status` and `down` find it."""
    server = servers(states=["waiting"])
    credentials_file(home, username=USER, password=PASSWORD)
    start = (datetime.now(UTC) + timedelta(hours=5)).replace(microsecond=0, tzinfo=None)
    key = tmp_path / "id_rsa"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(key))  # a key to log in with
    spec = ClusterSpec(site="nancy", jump_host=None, api_url=server.url,
                       reservation=str(start), ssh_key=str(key))
    with pytest.raises(G5kError) as stopped:
        cluster.up(spec, say=lambda _: None, timeout_s=0.2, poll_s=0.05)
    message = str(stopped.value)
    assert f"OAR job 4242 on nancy still waiting (OAR expects it to start at {start} UTC)" \
        in message
    assert "kept" in message and "sweeper cluster status" in message
    assert server.deleted == []
    assert server.posted[0]["reservation"] == str(start)
    saved = json.loads((tmp_path / "state.json").read_text())
    assert (saved["job_id"], saved["nodes"], saved["submitted_here"]) == (4242, [], True)

    assert main(["cluster", "status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"job 4242 on nancy: waiting (OAR expects it to start at {start} "
                              "UTC); no nodes yet, Ray not started")

    # `up` again with the job's id waits for the same job, still ours to delete
    with pytest.raises(G5kError, match="OAR job 4242 on nancy still waiting"):
        cluster.up(ClusterSpec(**{**saved["spec"], "job_id": 4242}), say=lambda _: None,
                   timeout_s=0.1, poll_s=0.05)
    assert len(server.posted) == 1
    assert json.loads((tmp_path / "state.json").read_text())["submitted_here"] is True

    assert main(["cluster", "down"]) == 0
    assert server.deleted == ["/stable/sites/nancy/jobs/4242"]
    assert not (tmp_path / "state.json").exists()
