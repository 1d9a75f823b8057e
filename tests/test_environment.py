"""The environment record: the sweep's software on its MLflow run, each trial's machine on its
child run, the differences a re-run prints, the report's summary, and no secret anywhere.

One sweep (a subprocess, so its Ray workers inherit the fake secrets), resumed for one more
trial and re-run once with `trial --from-run`; recorded facts are checked against sources
read here (pip, git, lscpu, /proc, /sys), not against sweeper's own collection."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from conftest import TINY_SCENARIO, write_space
from mlflow.tracking import MlflowClient

from sweeper.cli import main
from sweeper.environment import differences, g5k_facts, summary
from sweeper.tracking import Tracker, tracking_uri

PACKAGES = ("flwr", "ray", "torch", "torchaudio", "optuna", "mlflow", "numpy", "zeus")
ONE_TRIAL = {"trials": 1, "parallel": 1}
LEVERAGES = {"precision": {"choices": ["fp32", "bf16"]},
             "lr": {"low": 0.01, "high": 0.1, "log": True}}
REPO = Path(__file__).resolve().parent.parent
# made up at run time: this file's text (which a dirty checkout's diff may carry) has neither
SECRETS = {"SWEEPER_TEST_SECRET": f"tok-{uuid.uuid4().hex}",
           "AWS_SECRET_ACCESS_KEY": f"aws-{uuid.uuid4().hex}"}


def test_differences_are_one_line_per_fact_known_on_both_sides() -> None:
    old = {"torch": "2.14.1", "host": "gros-41", "cpufreq_governor": "performance",
           "command": "sweeper pareto --name a", "g5k_node": "gros-41", "numpy": "2.4.6"}
    new = {"torch": "2.15.0", "host": "gros-53", "cpufreq_governor": "powersave",
           "command": "sweeper pareto --resume a", "numpy": "2.4.6", "kernel": "6.1"}
    assert differences(old, new) == ["torch 2.14.1 → 2.15.0", "host gros-41 → gros-53",
                                     "governor performance → powersave"]
    assert differences(new, new) == []


def test_grid5000_nodes_are_named_from_their_hostname() -> None:
    assert g5k_facts("gros-41.nancy.grid5000.fr", "2480133") == {
        "g5k_cluster": "gros", "g5k_node": "gros-41", "g5k_site": "nancy",
        "oar_job_id": "2480133"}
    assert g5k_facts("chifflot-8.lille.grid5000.fr", None) == {
        "g5k_cluster": "chifflot", "g5k_node": "chifflot-8", "g5k_site": "lille"}
    assert g5k_facts("gros-41", "7")["g5k_node"] == "gros-41"  # short name, inside a job
    assert g5k_facts("web-1", None) == {} and g5k_facts("laptop", "7") == {}


def test_summary_warns_only_when_hardware_differs() -> None:
    node = {"host": "gros-41", "cpu_model": "Xeon Gold 5220", "cpus_logical": "36",
            "memory_gib": "94.1", "cpufreq_governor": "performance"}
    twin = {**node, "host": "gros-53"}
    assert not any("warning" in line for line in summary({}, [node, twin]))
    lines = summary({}, [node, twin, {**node, "cpufreq_governor": "powersave"}])
    assert "governor performance → powersave" in lines[-1] and "not comparable" in lines[-1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One trial of a sweep, run by the CLI in a process whose environment holds secrets."""
    root = tmp_path_factory.mktemp("environment")
    space = write_space(root / "env.yaml", budget=ONE_TRIAL, leverages=LEVERAGES,
                        scenario={**TINY_SCENARIO, "rounds": 1})
    args = ["pareto", "--space", str(space), "--store", str(root / "store"), "--name",
            "envs", "--no-dashboard"]
    done = subprocess.run([sys.executable, "-m", "sweeper.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **SECRETS})
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "store", args


def _runs(store: Path) -> tuple[MlflowClient, str, list]:
    """The client, the sweep's run id and its child runs in trial order."""
    client = MlflowClient(tracking_uri(store))
    parent = Tracker(store).sweep_run("envs", create=False)
    experiment = client.get_run(parent).info.experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
    return client, parent, sorted(children, key=lambda r: int(r.data.tags["sweeper.trial"]))


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          check=True).stdout


def _normalized(freeze: str) -> set[str]:
    return {re.sub(r"[-_.]+", "-", line).lower() for line in freeze.splitlines()
            if "==" in line}


def test_the_sweeps_run_records_its_software(sweep, tmp_path: Path) -> None:
    store, args = sweep
    client, parent, _ = _runs(store)
    tags = client.get_run(parent).data.tags
    # pip's view of the same search path (Ray adds its vendored packages to sys.path)
    paths = [arg for path in sys.path if path for arg in ("--path", path)]
    pip = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze", *paths],
                         capture_output=True, text=True, check=True).stdout
    versions = dict(line.split("==") for line in pip.splitlines() if "==" in line)
    for name in PACKAGES:
        assert tags[f"sweeper.env.{name}"] == versions[name], name
    assert tags["sweeper.env.python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert tags["sweeper.env.commit"] == tags["mlflow.source.git.commit"] == \
        _git("rev-parse", "HEAD").strip()
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no").strip())
    assert tags["sweeper.env.dirty"] == str(dirty).lower()
    assert tags["sweeper.env.command"] == shlex.join(["sweeper", *args])
    assert tags["sweeper.env.host"] == socket.gethostname()

    recorded = {a.path for a in client.list_artifacts(parent, "environment")}
    assert ("environment/git-diff.patch" in recorded) == dirty
    freeze = Path(client.download_artifacts(parent, "environment/pip-freeze.txt", str(tmp_path)))
    assert _normalized(freeze.read_text()) == _normalized(pip)


def _lscpu() -> dict[str, str]:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in
                                                  out.splitlines())}


def _sys_governor() -> str:
    found = {p.read_text().strip() for p in
             Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")}
    return ",".join(sorted(found)) or "none"


def test_each_trial_records_the_machine_it_ran_on(sweep) -> None:
    store, _ = sweep
    _, _, children = _runs(store)
    facts = {k.removeprefix("sweeper.machine."): v for k, v in children[0].data.tags.items()
             if k.startswith("sweeper.machine.")}
    lscpu = _lscpu()
    meminfo_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
    rapl = [p for p in Path("/sys/class/powercap").glob("intel-rapl:*/energy_uj")
            if os.access(p, os.R_OK)]
    assert facts["host"] == socket.gethostname()
    assert facts["cpu_model"] == lscpu["Model name"]
    assert facts["cpus_logical"] == lscpu["CPU(s)"]
    assert int(facts["cpus_physical"]) == (int(lscpu["Core(s) per socket"])
                                           * int(lscpu["Socket(s)"]))
    assert float(facts["memory_gib"]) == pytest.approx(meminfo_kib / 2**20, abs=0.1)
    assert facts["kernel"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert facts["cpufreq_governor"] == _sys_governor()
    assert facts["rapl"].startswith("readable" if rapl else "no: ")
    assert facts["torch_threads"] == str(TINY_SCENARIO["cpus_per_trial"])
    assert facts["torch_build"].startswith(torch.__version__)
    assert facts["torch_build"].endswith("CPU") == (torch.version.cuda is None)
    assert ("g5k_node" in facts) == socket.gethostname().endswith(".grid5000.fr")


def test_reruns_say_what_changed_the_report_warns_and_nothing_secret_is_stored(
        sweep, ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = sweep
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    client, parent, (first,) = _runs(store)
    torch_here = client.get_run(parent).data.tags["sweeper.env.torch"]
    # as if the sweep had run elsewhere, with an older torch
    client.set_tag(parent, "sweeper.env.torch", "2.13.0")
    client.set_tag(first.info.run_id, "sweeper.machine.host", "gros-41.nancy.grid5000.fr")

    more = write_space(tmp_path / "env.yaml", budget={"trials": 2, "parallel": 1},
                       leverages=LEVERAGES, scenario={**TINY_SCENARIO, "rounds": 1})
    assert main(["pareto", "--space", str(more), "--store", str(store), "--resume", "envs",
                 "--ray-address", ray_cluster]) == 0
    resumed = capsys.readouterr()
    changed = f"torch 2.13.0 → {torch_here}"
    assert f"  {changed}\n" in resumed.err
    _, _, (first, second) = _runs(store)
    assert changed in second.data.tags["sweeper.ran_elsewhere"].split("; ")
    assert "sweeper.ran_elsewhere" not in first.data.tags  # run before the change
    host = socket.gethostname()
    # the same hardware under two host names: one line, no warning
    assert f"machine: 2 trial(s) on gros-41.nancy.grid5000.fr, {host}: " in resumed.out
    assert "warning" not in resumed.out

    assert main(["trial", "--from-run", first.info.run_id, "--store", str(store),
                 "--json"]) == 0
    rerun = capsys.readouterr()
    elsewhere = json.loads(rerun.out.strip().splitlines()[-1])["ran_elsewhere"]
    host_line = f"host gros-41.nancy.grid5000.fr → {host}"
    assert changed in elsewhere and host_line in elsewhere
    # only what changed: the commit may move under a shared working tree, nothing else
    assert all(line in (changed, host_line) or line.startswith(("commit ", "dirty "))
               for line in elsewhere), elsewhere
    assert all(f"  {line}\n" in rerun.err for line in elsewhere)

    client.set_tag(second.info.run_id, "sweeper.machine.cpu_model", "Xeon Gold 5220")
    assert main(["report", "envs", "--store", str(store)]) == 0
    warning = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("warning: the trials of this sweep ran on different")]
    assert len(warning) == 1 and "Xeon Gold 5220" in warning[0], warning

    stored = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in stored) and any(p.name == "optuna.db"
                                                               for p in stored)
    assert any("pip-freeze" in p.name for p in stored)
    for path in stored:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name}'s value in {path}"
