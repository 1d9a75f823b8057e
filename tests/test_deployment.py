"""The deployment engine: real flower-superlink / flower-supernode processes on loopback,
against the simulation engine on the same config and seed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY_SCENARIO

from sweeper.config import Scenario, TrialConfig, resolve_leverages
from sweeper.engines.deployment import OWNER_ENV
from sweeper.engines.deployment import federation as deployment
from sweeper.engines.deployment.kept import KEPT
from sweeper.engines.deployment.processes import Processes, free_port
from sweeper.fronts import PruneRule
from sweeper.result import TrialResult
from sweeper.trial import run_trial

SUPERNODE = "sweeper.engines.deployment.supernode"
SUPEREXEC = "sweeper.engines.deployment.superexec"
SUPERLINK = "sweeper.engines.deployment.superlink"
FORKED = ("flwr-serverapp", "flwr-clientapp", "sweeper-zygote")  # by our SuperExecs
FLOWER_COMMANDS = (SUPERLINK, SUPERNODE, SUPEREXEC, *FORKED)


def ours(command: str, *args: str) -> set[int]:
    """Pids of processes running `command` (with `args`; tasks forked by our SuperExec are
    named after Flower's command) started by trials of this process (others may run
    deployments on the same machine)."""
    owner = f"{OWNER_ENV}={os.getpid()}".encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                environ = (proc / "environ").read_bytes().split(b"\0")
                comm = (proc / "comm").read_text().strip()
            except OSError:
                continue
            forked = comm in FORKED  # shares its SuperExec's command line, not its name
            if ((command == comm if forked else command in cmdline)
                    and all(a in cmdline for a in args) and owner in environ):
                found.add(int(proc.name))
    return found


def flower_processes() -> set[int]:
    """Pids of Flower's deployment processes started by trials of this process."""
    return set().union(*(ours(command) for command in FLOWER_COMMANDS))


def tiny_config(engine: str, seed: int = 0, codec: str = "int8", framing: str = "message",
                per_round: int | None = None, **scenario) -> TrialConfig:
    fields = {**TINY_SCENARIO, "num_clients": 2, "client_eval": False, "engine": engine,
              "meters": "modeled", **scenario}
    fields.pop("seed")
    config = Scenario(**fields)
    leverages = {"update_codec": codec, "framing": framing}
    if per_round is not None:
        leverages["clients_per_round"] = per_round
    return TrialConfig(config, resolve_leverages(leverages, config), seed)


@pytest.fixture(scope="module")
def loopback_pair() -> tuple[TrialResult, TrialResult, set[int], set[int]]:
    """The same trial on both engines, 2 of 4 clients sampled per round, and the Flower
    processes before and after. The deployment asks for namespaces on a machine made to
    lack them: it must say so and run on loopback."""
    before = flower_processes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deployment, "unavailable", lambda: "no namespaces in this test")
        deployed = run_trial(tiny_config("deployment", per_round=2, num_clients=4,
                                         deploy_network="netns"))
    kept = flower_processes()
    KEPT.close()
    after = flower_processes()
    simulated = run_trial(tiny_config("simulation", per_round=2, num_clients=4))
    assert kept > before  # the federation was kept for the next trial, until closed
    return deployed, simulated, before, after


def test_deployment_matches_simulation(loopback_pair) -> None:
    deployed, simulated, _, _ = loopback_pair
    assert deployed.status == "ok", deployed.reason
    assert [r.round for r in deployed.rounds] == [r.round for r in simulated.rounds] == [1, 2]
    messages = 2  # per round and direction: one train message per client (no client eval)
    # Flower draws node ids at random and samples clients from their list: both engines list
    # nodes in partition order, so a seed samples the same partitions (2 of 4 each round).
    trained = {engine: {round_: sorted(clients) for round_, clients in
                        result.info["cpu_s_by_client"].items()}
               for engine, result in (("deployed", deployed), ("simulated", simulated))}
    assert trained["deployed"] == trained["simulated"]
    assert all(len(clients) == 2 for clients in trained["simulated"].values())
    for mine, theirs in zip(deployed.rounds, simulated.rounds, strict=True):
        # The same numbers to the last bit: replies are aggregated in partition order.
        assert (mine.accuracy, mine.loss) == (theirs.accuracy, theirs.loss)
        # Same payloads; only message metadata (node ids, timestamps) differ by a few bytes.
        assert abs(mine.bytes_up - theirs.bytes_up) <= 64 * messages
        assert abs(mine.bytes_down - theirs.bytes_down) <= 64 * messages
    # Flower's own per-run count (what `flwr ls` shows) is of the same messages, plus object
    # trees and ids, a few percent that grow with the number of arrays (6% for int8 here).
    flower = deployed.info["flower_run_bytes"]
    assert flower["sent"] == pytest.approx(sum(r.bytes_down for r in deployed.rounds), rel=0.1)
    assert flower["received"] == pytest.approx(sum(r.bytes_up for r in deployed.rounds),
                                               rel=0.1)


def test_without_namespaces_it_says_so_and_runs_on_loopback(loopback_pair) -> None:
    deployed = loopback_pair[0]
    assert deployed.info["engine_notes"] == [
        "deploy_network netns unavailable (no namespaces in this test): ran unshaped on "
        "loopback"]
    assert "wire" not in deployed.info  # loopback: no per-client link to count on
    assert deployed.meters["communication_j"].meter.startswith("payload_bytes")


def test_no_flower_process_outlives_the_kept_federation(loopback_pair) -> None:
    _, _, before, after = loopback_pair
    assert after <= before, f"left behind: {sorted(after - before)}"


def test_a_kept_federation_runs_the_next_trial_as_a_fresh_one_would() -> None:
    """Two trials in a row on one kept federation: the second starts no Flower process of
    its own, and its rounds are the simulation engine's to the last bit: no model,
    partition or client state of the first (here top-k's error-feedback residual, kept in
    each SuperNode's context) reaches it. (The second sends each tensor as its own Flower
    Array, as Flower's own apps do: the engines agree under both framings.)

    Each client is billed the CPU time the simulation engine bills it, in the federation's
    first trial as in later ones. Tasks once computed on as many torch threads as the
    machine has cores, beside each other: spare threads spun on busy cores, and the first
    trial's round 1 was billed 0.6-0.9 CPU-s per client for 0.05 of work (0.15-0.9 later)."""
    first = tiny_config("deployment", 1, "topk")
    second = tiny_config("deployment", 2, "topk", framing="tensor")
    KEPT.close()
    fresh = run_trial(first)
    federation = ours(SUPERLINK) | ours(SUPERNODE) | ours(SUPEREXEC)
    again = run_trial(second)
    assert again.status == "ok", again.reason
    assert again.info["federation_reused"]
    assert ours(SUPERLINK) | ours(SUPERNODE) | ours(SUPEREXEC) == federation
    simulated = run_trial(tiny_config("simulation", 2, "topk", framing="tensor"))
    for mine, theirs in zip(again.rounds, simulated.rounds, strict=True):
        assert (mine.accuracy, mine.loss) == (theirs.accuracy, theirs.loss)
        # the same payloads; the metadata carries other node ids
        assert abs(mine.bytes_up - theirs.bytes_up) <= 64 * 2
    expected = simulated.info["cpu_s_by_client"]  # round: {partition: CPU-s}, ~0.05 each
    for deployed in fresh, again:
        billed = deployed.info["cpu_s_by_client"]
        assert billed.keys() == expected.keys()
        for round_, per_client in billed.items():
            assert per_client.keys() == expected[round_].keys()
            for client, cpu_s in per_client.items():  # bound: CPU-time noise on 2 cores
                assert abs(cpu_s - expected[round_][client]) < 0.1, (round_, client, billed)
    KEPT.close()


def test_a_supernode_killed_mid_round_fails_the_trial_and_leaves_nothing() -> None:
    """SIGKILL to SuperNode 1 (and its ClientApp) while clients train: the trial fails at
    once with the reason (Flower alone would wait 60 s of heartbeats, then for ever for the
    next round's nodes), and no process is left."""
    before = flower_processes()
    killed: list[int] = []

    def kill_when_training() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if ours("flwr-clientapp"):
                for pid in ours(SUPERNODE, "partition-id=1 "):
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_training, daemon=True)
    killer.start()
    result = run_trial(tiny_config("deployment"))
    killer.join()
    assert killed
    assert result.status == "failed"
    assert "supernode-1 killed by SIGKILL during the run" in result.reason, result.reason
    assert flower_processes() <= before


def test_tls_node_auth_and_the_trials_watcher_across_processes() -> None:
    """With TLS (certificates made for the trial) and SuperNode authentication (each
    SuperNode's key registered through the Control API before it starts), the prune rule,
    which lives in the trial's process while the ServerApp runs in flwr-serverapp, stops
    the federation after the first round as under the simulation engine."""
    config = tiny_config("deployment", deploy_node_auth=True, num_clients=2, rounds=3)
    result = run_trial(config, PruneRule(0.0, ((0.5, 1e-9),)))
    assert result.status == "pruned", result.reason
    assert [r.round for r in result.rounds] == [1]
    assert result.reason.startswith("round 1: pruned")
    KEPT.close()
    assert not flower_processes()


KILLED_TRIAL = """
import sys
from sweeper.config import TrialConfig
from sweeper.trial import run_trial
run_trial(TrialConfig.from_json(sys.argv[1]))
"""


def test_a_trial_killed_outright_takes_its_processes_along() -> None:
    """SIGKILL to the trial's own process (no finally runs): its SuperLink, SuperNodes and
    SuperExecs die with it (PR_SET_PDEATHSIG), and their ClientApps and ServerApp follow."""
    config = tiny_config("deployment", num_clients=2)
    trial = subprocess.Popen([sys.executable, "-c", KILLED_TRIAL, config.to_json()],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    owner = f"{OWNER_ENV}={trial.pid}".encode()

    def theirs() -> dict[int, bytes]:
        """pid -> command line and name of every process the trial started, at any depth."""
        found = {}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != trial.pid:
                try:
                    if owner in (proc / "environ").read_bytes().split(b"\0"):
                        found[int(proc.name)] = ((proc / "cmdline").read_bytes()
                                                 + (proc / "comm").read_bytes())
                except OSError:
                    continue
        return found

    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(
                b"flwr-clientapp" in name for name in theirs().values()):
            time.sleep(0.1)
        assert len(theirs()) >= 6  # SuperLink, 2 SuperNodes, 3 SuperExecs, ClientApps
    finally:
        trial.kill()
        trial.wait()
    deadline = time.monotonic() + 30
    while theirs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not theirs()


def test_a_superlink_port_taken_in_between_is_retried(tmp_path: Path) -> None:
    """Another process binds the free port picked for the SuperLink before it starts: the
    SuperLink fails to bind, is discarded, and a second port is tried."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    procs = Processes(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deployment, "free_port",
                      lambda host: next(ports, None) or free_port(host))
        try:
            federation = deployment.start(tiny_config("deployment"), tmp_path, procs)
            assert not federation.superlink.endswith(f":{taken.getsockname()[1]}")
            assert "superlink-0" not in procs.procs and "superlink-1" in procs.procs
            assert procs.exited() is None
        finally:
            procs.close()
            taken.close()
    assert not flower_processes()


@pytest.mark.slow  # ~50 s: a deployment whose SuperNodes are Ray actors
def test_supernodes_placed_by_ray_run_in_their_actors(ray_cluster) -> None:
    """`deploy_placement: ray`: each SuperNode is started by a Ray actor of its own (here
    all on the one local node), with TLS and SuperNode authentication although the scenario
    does not ask for them: the SuperLink on the trial's loopback, its Fleet API at the
    node's address, the CA and each SuperNode's key handed to its actor and deleted there.
    The result is the simulation's, and the actors and their processes go at the end."""
    import ray

    links: list[deployment.Link] = []

    def start_link(*args, **kwargs) -> deployment.Link:
        links.append(start_link_(*args, **kwargs))
        return links[-1]

    start_link_ = deployment.start_link
    before = flower_processes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deployment, "start_link", start_link)
        placed = run_trial(tiny_config("deployment", deploy_placement="ray", num_clients=2,
                                       rounds=1))
    assert placed.status == "ok", placed.reason
    simulated = run_trial(tiny_config("simulation", num_clients=2, rounds=1))
    assert [r.round for r in placed.rounds] == [r.round for r in simulated.rounds] == [1]
    for mine, theirs in zip(placed.rounds, simulated.rounds, strict=True):
        assert abs(mine.accuracy - theirs.accuracy) <= 0.02
        assert abs(mine.bytes_up - theirs.bytes_up) <= 64 * 2
        assert abs(mine.bytes_down - theirs.bytes_down) <= 64 * 2
    node = ray.util.get_node_ip_address()
    [link] = links
    assert link.auth and link.creds is not None
    assert link.creds.node_keys == []  # the SuperNodes' keys were never on the driver's disk
    assert link.control.startswith(f"{deployment.HOST}:")
    assert link.fleet.startswith(f"{node}:")
    supernodes = placed.info["supernodes"]
    assert len(supernodes) == 2
    assert {s["node"] for s in supernodes} == {node}
    assert os.getpid() not in {s["actor_pid"] for s in supernodes}  # not the trial's process
    assert len({s["actor_pid"] for s in supernodes}) == 2
    assert not [s["credentials"] for s in supernodes if Path(s["credentials"]).exists()]
    KEPT.close()
    assert flower_processes() <= before
    deadline = time.monotonic() + 15  # ray.kill returns before the worker is gone
    actors = {s["actor_pid"] for s in supernodes}
    while actors and time.monotonic() < deadline:
        actors = {pid for pid in actors if _alive(pid)}
        time.sleep(0.2)
    assert not actors, f"actor processes left: {sorted(actors)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_the_federations_processes_read_the_trials_data_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's processes get a private HOME; the corpus and features must still be the
    ones the trial cached (under the user's HOME when SWEEPER_CACHE is unset), else every
    new federation synthesized the corpus again in each SuperExec."""
    monkeypatch.delenv("SWEEPER_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    env = deployment._env(tmp_path / "federation")
    assert env["HOME"] == str(tmp_path / "federation")
    assert env["SWEEPER_CACHE"] == str(tmp_path / "user" / ".cache" / "sweeper")
