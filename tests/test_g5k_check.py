"""`sweeper cluster check` and the nodes' Python environment, against stand-ins (g5k_fakes):
real OpenSSH servers on loopback (a jump host and a frontend/node, with a home of their own),
the API stand-in over HTTPS under its own CA, and fake `oarsub`/`uv` scripts on the servers'
PATH that record what they were asked."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import paramiko
import pytest
import yaml
from g5k_fakes import OAR_STUBS, PASSWORD, REFERENCE_CLUSTERS, USER, FakeG5kApi, Sshd

from g5k import G5kError, cluster, nodeenv
from g5k.config import load_cluster, shell_path
from g5k.ssh import PASSPHRASE_ENV
from sweeper.cli import main

HERE = nodeenv.local_versions()

# `uv venv --python V ENV` makes ENV/bin/python (this interpreter); `uv pip install --python
# ENV/bin/python -e DIR` puts a `ray` beside it that fails at once. Each call is logged with
# the address the SSH client reached (which node it ran on).
FAKE_UV = f"""#!/bin/sh
echo "$(echo "$SSH_CONNECTION" | cut -d' ' -f3) uv $*" >> "$UV_LOG"
case "$1" in
venv) mkdir -p "$4/bin"
      printf '#!/bin/sh\\nexec {sys.executable} "$@"\\n' > "$4/bin/python"
      chmod +x "$4/bin/python";;
pip)  bin=$(dirname "$4")
      printf '#!/bin/sh\\necho "fake ray: no cluster here" >&2\\nexit 1\\n' > "$bin/ray"
      chmod +x "$bin/ray";;
esac
"""


class Site:
    """access.grid5000.fr (the jump sshd) and nancy's frontend and nodes (the other sshd,
    127.0.0.1 and 127.0.0.2), whose users share the home `home`; the API stand-in."""

    def __init__(self, root: Path, api: FakeG5kApi) -> None:
        self.root, self.api = root, api
        self.home = root / "remote-home"
        self.home.mkdir()
        self.key_file = root / "id_rsa"
        key = paramiko.RSAKey.generate(2048)
        key.write_private_key_file(str(self.key_file))
        stubs = root / "bin"
        stubs.mkdir()
        for name, text in {**OAR_STUBS, "uv": FAKE_UV}.items():
            (stubs / name).write_text(text)
            (stubs / name).chmod(0o755)
        self.uv_log, self.oar_log = root / "uv.log", root / "oar.log"
        env = {"PATH": f"{stubs}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home),
               "OAR_LOG": str(self.oar_log), "OAR_STATE": str(root / "oar-state"),
               "OAR_NODES": "127.0.0.2,127.0.0.1", "UV_LOG": str(self.uv_log)}
        public = f"{key.get_name()} {key.get_base64()}"
        self.jump = Sshd(root / "jump", public, env)
        self.node = Sshd(root / "node", public, env)

    def cluster_file(self, **keys) -> Path:
        path = self.root / "cluster.yaml"
        path.write_text(yaml.safe_dump({
            "site": "nancy", "cluster": "taurus", "jump_host": "127.0.0.1",
            "jump_port": self.jump.port, "frontend": "127.0.0.1", "ssh_port": self.node.port,
            "ssh_key": str(self.key_file), "known_hosts": str(self.root / "known_hosts"),
            "user": getpass.getuser(), "api_url": self.api.url, **keys}))
        return path

    def env(self, name: str = "sweeper-venv", python: str | None = None) -> Path:
        """A built env in the shared home: this interpreter, or a script printing `python`'s
        line as the versions probe would."""
        (self.home / "sweeper").mkdir(exist_ok=True)
        (self.home / "sweeper" / "pyproject.toml").write_text("[project]\nname = 'sweeper'\n")
        bin_dir = self.home / name / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        body = f"echo '{python}'" if python else f'exec {sys.executable} "$@"'
        for tool in ("python", "ray"):
            (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
            (bin_dir / tool).chmod(0o755)
        return bin_dir.parent

    def close(self) -> None:
        self.jump.close()
        self.node.close()


@pytest.fixture(autouse=True)
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This side's home, state file and environment: API login in G5K_USER/G5K_PASSWORD,
    no ssh-agent, no passphrase."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SWEEPER_G5K_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("G5K_USER", USER)
    monkeypatch.setenv("G5K_PASSWORD", PASSWORD)
    for name in ("SSH_AUTH_SOCK", PASSPHRASE_ENV, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    api = FakeG5kApi(["127.0.0.2", "127.0.0.1"], [], clusters=REFERENCE_CLUSTERS,
                     exotic=("yeti",), tls=True)
    monkeypatch.setenv("G5K_CA_BUNDLE", str(api.ca_path))  # the "system bundle"
    (tmp_path / "site").mkdir()
    running = Site(tmp_path / "site", api)
    yield running
    running.close()
    api.close()


def check(site: Site, capsys: pytest.CaptureFixture, expected_code: int,
          **keys) -> dict[str, str]:
    """Run `sweeper cluster check`; its lines by step name, each checked to be one line
    of status and text. Nothing reserved, ever."""
    code = main(["cluster", "check", "--g5k", str(site.cluster_file(**keys))])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert code == expected_code, lines + captured.err.splitlines()
    steps = {line.split()[1].rstrip(":"): line for line in lines}
    assert list(steps) == ["credentials", "api", "ssh", "env", "wattmeter", "jobs"], lines
    assert all(line.split()[0] in ("ok", "warn", "fail", "skip") for line in lines)
    assert PASSWORD not in captured.out + captured.err
    assert site.api.posted == [] and not site.oar_log.exists()  # nothing reserved
    return steps


def test_all_ok(site: Site, capsys: pytest.CaptureFixture) -> None:
    site.env()
    steps = check(site, capsys, 0)
    assert all(line.startswith("ok ") for line in steps.values()), steps
    assert steps["credentials"] == f"ok   credentials: {USER} from G5K_USER/G5K_PASSWORD"
    assert steps["api"] == f"ok   api: {site.api.url} (CA {site.api.ca_path})"
    assert "127.0.0.1" in steps["ssh"] and "trusted on first use" in steps["ssh"]
    assert steps["env"] == (f"ok   env: ~/sweeper-venv: {nodeenv.describe(HERE)}, as here")
    assert steps["wattmeter"] == ("ok   wattmeter: taurus: wattmetre_power_watt every 1 s on "
                                  "every node")
    assert steps["jobs"] == "ok   jobs: taurus: types none, queue default"
    # the host keys were saved: a second check connects without trusting anything new
    assert "trusted" not in check(site, capsys, 0)["ssh"]


def test_bad_credentials(site: Site, capsys: pytest.CaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    site.env()
    monkeypatch.setenv("G5K_PASSWORD", "wrong")
    steps = check(site, capsys, 2)
    assert steps["api"].startswith("fail api: Grid'5000 API: authentication failed (401)")
    assert "G5K_USER/G5K_PASSWORD" in steps["api"]
    assert steps["wattmeter"] == "skip wattmeter: not checked: api failed"
    assert steps["jobs"] == "skip jobs: not checked: api failed"
    assert steps["ssh"].startswith("ok ") and steps["env"].startswith("ok ")  # printed all


def test_credentials_file_others_may_read(site: Site, capsys: pytest.CaptureFixture,
                                          local: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site.env()
    monkeypatch.delenv("G5K_USER")
    monkeypatch.delenv("G5K_PASSWORD")
    path = local / ".python-grid5000.yaml"
    path.write_text(yaml.safe_dump({"username": USER, "password": PASSWORD}))
    path.chmod(0o644)
    steps = check(site, capsys, 2)
    assert steps["credentials"].startswith("fail credentials: ")
    assert f"chmod 600 {path}" in steps["credentials"]
    assert steps["api"] == "skip api: not checked: credentials failed"
    path.unlink()  # none at all, from outside Grid'5000 (a jump host): the API needs them
    steps = check(site, capsys, 2)
    assert steps["credentials"].startswith("fail credentials: none") and str(path) in \
        steps["credentials"]


def test_api_tls_failure(site: Site, capsys: pytest.CaptureFixture, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """No system bundle with the Grid'5000 CA: certifi's cannot verify the stand-in's."""
    site.env()
    monkeypatch.setenv("G5K_CA_BUNDLE", str(tmp_path / "no-such-bundle.crt"))
    steps = check(site, capsys, 2)
    assert steps["api"].startswith("fail api: cannot verify the TLS certificate")
    assert "certifi" in steps["api"] and "G5K_CA_BUNDLE" in steps["api"]


def test_ssh_key_refused(site: Site, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    site.env()
    stranger = tmp_path / "stranger_key"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(stranger))
    steps = check(site, capsys, 2, ssh_key=str(stranger))
    assert steps["ssh"].startswith("fail ssh: SSH ") and "login refused" in steps["ssh"]
    assert str(stranger) in steps["ssh"] and "Grid'5000 account" in steps["ssh"]
    assert steps["env"] == "skip env: not checked: ssh failed"
    assert steps["api"].startswith("ok ") and steps["jobs"].startswith("ok ")


def test_ssh_changed_host_key(site: Site, capsys: pytest.CaptureFixture) -> None:
    site.env()
    other = paramiko.RSAKey.generate(2048)
    known = site.root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{site.jump.port} {other.get_name()} {other.get_base64()}\n")
    steps = check(site, capsys, 2)
    assert steps["ssh"].startswith("fail ssh: SSH ")
    assert "is not the one saved in" in steps["ssh"] and f"{known} line 1" in steps["ssh"]
    assert f"ssh-keygen -R '[127.0.0.1]:{site.jump.port}'" in steps["ssh"]


def test_env_not_built_yet(site: Site, capsys: pytest.CaptureFixture) -> None:
    """No env and no project: a failure; the project there: `up` builds the env (a
    warning, the check passes)."""
    steps = check(site, capsys, 2)
    assert steps["env"] == ("fail env: no ~/sweeper-venv and no ~/sweeper/pyproject.toml on "
                            "127.0.0.1: git clone this project to ~/sweeper there (`sweeper "
                            "cluster up` builds the env from it)")
    site.env(name="other-venv")  # the project only
    steps = check(site, capsys, 0)
    assert steps["env"].startswith("warn env: ~/sweeper-venv not built yet: `sweeper cluster "
                                   "up` builds it on the first node (uv, Python 3.11")


@pytest.mark.parametrize("action", ["check", "up"])
def test_an_env_python_other_than_the_drivers_is_refused_before_reserving(
        site: Site, capsys: pytest.CaptureFixture, action: str) -> None:
    other = f"3.{sys.version_info.minor + 1}"
    path = site.cluster_file(env_python=other, reservation_method="api")
    assert main(["cluster", action, "--g5k", str(path)]) == 2
    err = capsys.readouterr()
    here = f"3.{sys.version_info.minor}"
    assert (f"env_python: {other} is not this driver's Python {here}: Ray needs the same "
            f"Python minor version on the driver and the nodes; set env_python: \"{here}\"") \
        in err.out + err.err
    assert [m for m, _, _ in site.api.requests if m == "POST"] == []  # nothing reserved
    assert not site.oar_log.exists()


def test_env_versions_differ(site: Site, capsys: pytest.CaptureFixture) -> None:
    there = {**HERE, "python": "3.13.1", "ray": "2.54.0",
             "torch": f"{HERE['torch']}+cu128", "flwr": None}
    site.env(python=json.dumps(there))
    steps = check(site, capsys, 2)
    assert steps["env"].startswith(
        f"fail env: ~/sweeper-venv has Python 3.13.1 (here {HERE['python']}), ray 2.54.0 "
        f"(here {HERE['ray']}), flwr missing (here {HERE['flwr']}): the driver and the nodes "
        "must agree")  # torch: the same release, another build (+cu128): fine


@pytest.mark.parametrize(("name", "keys", "code", "line"), [
    ("gros", {}, 0, "warn wattmeter: gros: wattmetre_power_watt every 1 s on 36 nodes only "
     "(gros-41…gros-76), pdu_outlet_power_watt (every 1 s) on the others; to get only those: "
     "properties: \"wattmeter='YES'\""),
    ("gros", {"properties": "wattmeter='YES'"}, 0, "ok   wattmeter: gros: wattmetre_power_watt "
     "every 1 s on 36 nodes (gros-41…gros-76), which properties: wattmeter='YES' reserves"),
    ("parasilo", {}, 0, "warn wattmeter: parasilo: no wattmetre; node_energy_j from "
     "pdu_outlet_power_watt (every 1 s, some nodes only), coarser"),
    ("grdix", {}, 2, "fail wattmeter: grdix: no node power metric collected by default in "
     "Kwollect (bmc_node_power_watt on demand only): node_energy_j would be NaN")])
def test_wattmeter_coverage(site: Site, capsys: pytest.CaptureFixture, name: str, keys: dict,
                            code: int, line: str) -> None:
    site.env()
    assert check(site, capsys, code, cluster=name, **keys)["wattmeter"].startswith(line)


def test_job_types_and_queue(site: Site, capsys: pytest.CaptureFixture) -> None:
    site.env()
    steps = check(site, capsys, 0, cluster="yeti")  # exotic: the API submission adds it
    assert steps["jobs"] == ("ok   jobs: yeti: types none (+ exotic, added at submission), "
                             "queue default")
    steps = check(site, capsys, 2, cluster="yeti", reservation_method="oarsub")
    assert steps["jobs"] == ("fail jobs: job_types: yeti is exotic: add exotic (with oarsub "
                             "the job gets only the types listed)")
    assert check(site, capsys, 0, cluster="yeti", reservation_method="oarsub",
                 job_types=["exotic"])["jobs"].startswith("ok ")
    steps = check(site, capsys, 2, queue="production")  # the stand-in: admin, default
    assert steps["jobs"] == ("fail jobs: queue: taurus takes jobs in default, not "
                             "production: set queue: default")


@pytest.mark.parametrize("python_env", ["~/venv; rm -rf ~", "~/my venv", "$(id)/venv",
                                        "~/../venv"])
@pytest.mark.parametrize("action", ["up", "check"])
def test_unsafe_python_env_is_refused_at_load(site: Site, capsys: pytest.CaptureFixture,
                                              python_env: str, action: str) -> None:
    path = site.cluster_file(python_env=python_env, reservation_method="api")
    assert main(["cluster", action, "--g5k", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: python_env: " in err[0], err
    assert site.api.requests == [] and not site.oar_log.exists()  # nothing sent, nothing run


def test_shell_path_is_one_word_and_keeps_the_tilde(tmp_path: Path) -> None:
    """Quoted where pasted, whatever it holds (even what load refuses), `~/` expanded."""
    for path, expanded in [("~/sweeper-venv", f"{tmp_path}/sweeper-venv"),
                           ("~/a b;c $(id)", f"{tmp_path}/a b;c $(id)"),
                           ("/opt/it's", "/opt/it's")]:
        out = subprocess.run(["sh", "-c", f"printf '%s\\n' {shell_path(path)}/bin/ray"],
                             env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=True).stdout
        assert out == f"{expanded}/bin/ray\n"
    assert shell_path("~/sweeper-venv") == "~/sweeper-venv"  # as --dry-run shows it


def test_up_builds_the_env_on_the_first_node(site: Site, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """`cluster up` with an env not built yet: uv runs on the job's first node (127.0.0.2
    here), the env's path quoted and its `~` expanded there, before Ray starts; Ray then
    fails (the fake `ray`) and the job is given back."""
    ray_dir, again = (tempfile.mkdtemp(prefix="swc", dir="/tmp") for _ in range(2))
    try:
        spec = load_cluster(site.cluster_file(python_env="~/envs/sweeper-venv", nodes=2,
                                              reservation_method="oarsub", ray_dir=ray_dir))
        (site.home / "sweeper").mkdir()
        (site.home / "sweeper" / "pyproject.toml").write_text("[project]\nname = 'sweeper'\n")
        with pytest.raises(G5kError, match=r"Ray head on 127\.0\.0\.2 did not start: fake ray"):
            cluster.up(spec, say=lambda _line: None, timeout_s=30, poll_s=0.1)
        env = site.home / "envs" / "sweeper-venv"
        assert site.uv_log.read_text().splitlines() == [
            f"127.0.0.2 uv venv --python 3.11 {env}",
            f"127.0.0.2 uv pip install --python {env}/bin/python -c {env}-pins.txt "
            f"-e {site.home}/sweeper"]
        # the driver's stack, pinned: every package at this driver's version
        pins = Path(f"{env}-pins.txt").read_text().splitlines()
        for name in ("ray", "flwr", "optuna", "mlflow", "numpy", "torch"):
            assert f"{name}=={metadata.version(name).split('+')[0]}" in pins, name
        assert not [pin for pin in pins if pin.startswith("sweeper==")]
        assert "oardel 777" in site.oar_log.read_text()
        # the env is there now: a second `up` builds nothing
        site.uv_log.unlink()
        with pytest.raises(G5kError, match="fake ray"):
            cluster.up(replace(spec, ray_dir=again), say=lambda _line: None, timeout_s=30,
                       poll_s=0.1)
        assert not site.uv_log.exists()
    finally:
        for path in (ray_dir, again):
            shutil.rmtree(path, ignore_errors=True)


def test_up_without_the_project_says_so(site: Site) -> None:
    spec = load_cluster(site.cluster_file(reservation_method="oarsub", nodes=1))
    with pytest.raises(G5kError) as failed:
        cluster.up(spec, say=lambda _line: None, timeout_s=30, poll_s=0.1)
    assert str(failed.value).startswith(
        "building ~/sweeper-venv on 127.0.0.2 failed: no ~/sweeper/pyproject.toml: git clone "
        "this project to ~/sweeper")
    assert not site.uv_log.exists() and "oardel 777" in site.oar_log.read_text()


def test_versions_compared() -> None:
    here = {"python": "3.11.7", "ray": "2.55.1", "torch": "2.14.1+cpu", "flwr": "1.41.0"}
    assert nodeenv.mismatches(here, {**here, "python": "3.11.12", "torch": "2.14.1"}) == []
    assert nodeenv.mismatches(here, {**here, "python": "3.12.1", "ray": None}) == [
        "Python 3.12.1 (here 3.11.7)", "ray missing (here 2.55.1)"]


def test_env_python_that_does_not_run(site: Site, capsys: pytest.CaptureFixture) -> None:
    python = site.env() / "bin" / "python"
    python.write_text("#!/bin/sh\necho 'cannot execute binary file: Exec format error' >&2\n"
                      "exit 126\n")
    steps = check(site, capsys, 2)
    assert steps["env"] == ("fail env: ~/sweeper-venv/bin/python does not run on 127.0.0.1: "
                            "cannot execute binary file: Exec format error (remove "
                            "~/sweeper-venv for `sweeper cluster up` to build it again)")
