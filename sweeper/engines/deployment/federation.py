"""The deployment engine: the trial's ServerApp and ClientApp run by Flower's deployment
runtime, a `flower-superlink` and one `flower-supernode` per client as separate processes
talking to each other over HTTP, the run started through the SuperLink's Control API (what
`flwr run` does) and its per-round accounting read back from a file the ServerApp writes.

Both use `--isolation process` with a `flower-superexec` of ours beside each: Flower's
default (`subprocess`) starts the SuperExec detached in a session of its own, out of reach
of the process group the trial kills when it ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from flwr.common.constant import (
    FLWR_INTERNAL_GRPC_CONTROL_API,
    FLWR_INTERNAL_GRPC_FLEET_API,
    Status,
    SubStatus,
)
from flwr.common.serde import fab_to_proto, user_config_to_proto
from flwr.proto.control_pb2 import (  # pylint: disable=E0611
    ListRunsRequest,
    RegisterNodeRequest,
    StartRunRequest,
    StopRunRequest,
)
from flwr.supercore.control.control_http_client import ControlHttpClient
from flwr.supercore.fab import Fab
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

import sweeper
from sweeper.config import TrialConfig
from sweeper.energy import link_shape
from sweeper.engines.deployment import OWNER_ENV
from sweeper.engines.deployment.apps import (
    NODE_PARTITIONS,
    STATS_PATH,
    TRIAL_CONFIG,
    WATCHER_DIR,
    WIRE_INTERFACES,
    read_stats,
)
from sweeper.engines.deployment.doorbell import BELLS, BELLS_ENV, bells_folder, ring
from sweeper.engines.deployment.gateway import gateway_argv
from sweeper.engines.deployment.kept import KEPT, shape
from sweeper.engines.deployment.netns import Network, unavailable
from sweeper.engines.deployment.processes import Processes, free_port, wait_listening
from sweeper.engines.deployment.ray_nodes import RaySuperNodes
from sweeper.engines.deployment.relay import Answerer
from sweeper.engines.deployment.roster import ROSTER, ROSTER_ENV, read_roster, roster_folder
from sweeper.engines.deployment.superexec import announce, failed_file, ready_file
from sweeper.engines.deployment.tls import Credentials, make_credentials
from sweeper.errors import SweeperError
from sweeper.fl.strategy import RoundStats
from sweeper.kws import trial_data
from sweeper.kws.dataset import cache_root

HOST = "127.0.0.1"
ANNOUNCEMENTS = "announcements"  # where the SuperExecs learn the next trial (superexec.py)

START_TIMEOUT_S = 60.0
# A new federation's SuperExecs import torch and warm up first: minutes on a loaded machine.
WARM_TIMEOUT_S = 600.0
ROUND_TIMEOUT_S = 1800.0  # a run is given this much per round (and one more) to finish
STATUS_POLL_S = 1.0  # the run's status, while it runs
LOCAL_POLL_S = 0.02  # the ServerApp's rounds file
ANSWER_S = 0.002  # the ServerApp's calls to the trial's watcher
log = logging.getLogger(__name__)

PYPROJECT = """\
[project]
name = "sweeper-trial"
version = "1.0.0"
description = "One sweeper trial"
license = "Apache-2.0"

[tool.flwr.app]
publisher = "sweeper"

[tool.flwr.app.components]
serverapp = "sweeper.engines.deployment.apps:server_app"
clientapp = "sweeper.engines.deployment.apps:client_app"

[tool.flwr.app.config]
trial-config = ""
stats-path = ""
wire-interfaces = ""
watcher-dir = ""
node-partitions = "{}"
"""


@dataclass
class Link:
    """A running SuperLink: its Control and Runtime APIs on the trial's loopback only
    (submitting an app is running code), the Fleet API where the SuperNodes reach it."""

    control: str  # host:port of the SuperLink (all its APIs), 127.0.0.1
    fleet: str  # host:port the SuperNodes connect to: the same, or the Fleet gateway's
    creds: Credentials | None  # with TLS
    auth: bool  # SuperNode authentication: only the keys in `creds` may join


@dataclass
class Federation:
    """The running processes of one trial's deployment and where to reach them."""

    procs: Processes
    home: Path
    superlink: str  # host:port of the SuperLink's Control and Runtime APIs (127.0.0.1)
    network: Network | None  # the clients' namespaces and links, if any
    ca: Path | None = None  # the CA that signed the SuperLink's certificate, with TLS
    remote: RaySuperNodes | None = None  # SuperNodes placed by Ray, if so
    warm: list[str] = field(default_factory=lambda: ["server"])  # SuperExecs told of trials
    trials: int = 0  # trials announced so far
    notes: list[str] = field(default_factory=list)  # what could not be done as asked
    closing: contextlib.ExitStack | None = None  # what `close` ends

    def close(self) -> None:
        if self.closing is not None:
            self.closing.close()

    def exited(self) -> str | None:
        """The first of the federation's processes to have ended, and how; or None."""
        return self.procs.exited() or (self.remote.exited() if self.remote else None)


def run_trial(config: TrialConfig, watcher=None,
              info: dict | None = None) -> list[RoundStats]:
    """Run the trial as one Flower run on a SuperLink and `num_clients` SuperNodes: the
    federation kept from this process's last trial if it has the same shape (`kept.py`),
    else a new one. It is kept for the next trial if this one ends well, else closed:
    every process, namespace and link is then gone when this raises. `info` receives
    `engine_notes` (what could not be done as asked), `flower_run_bytes` (Flower's own count
    of the run's bytes, as `flwr ls` shows it) and whether the federation was `reused`."""
    info = info if info is not None else {}
    trial_data(config)  # corpus and features cached once, before any process reads them
    wanted = shape(config)
    federation = KEPT.take(wanted)
    info["federation_reused"] = federation is not None
    try:
        if federation is None:
            federation = open_federation(config)
        info["engine_notes"] = list(federation.notes)
        if federation.remote is not None:
            info["supernodes"] = federation.remote.placement
        rounds = run(federation, config, watcher, info)
    except BaseException:
        if federation is not None:
            federation.close()
        raise
    KEPT.keep(wanted, federation)
    return rounds


def open_federation(config: TrialConfig) -> Federation:
    """Start the processes (and namespaces) of a federation for `config`; closing the
    federation ends them all and deletes its folder."""
    home = Path(tempfile.mkdtemp(prefix="sweeper-deploy-"))
    procs = Processes(home)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        network, notes = _network(config, stack)
        stack.callback(procs.close)  # processes go before their namespaces
        federation = start(config, home, procs, network, stack)
        federation.notes = notes + (network.notes if network else [])
        federation.closing = stack.pop_all()
    return federation


def _network(config: TrialConfig, stack: contextlib.ExitStack
             ) -> tuple[Network | None, list[str]]:
    """The clients' namespaces if the scenario asks for them and this machine has them."""
    if config.scenario.deploy_network != "netns":
        return None, []
    reason = unavailable()
    if reason is None:
        try:
            shape = link_shape(config.scenario.network_profile)
            return stack.enter_context(Network(config.scenario.num_clients, shape)), []
        except SweeperError as exc:
            reason = str(exc)
    note = f"deploy_network netns unavailable ({reason}): ran unshaped on loopback"
    log.warning(note)
    return None, [note]


def _env(home: Path) -> dict[str, str]:
    """The trial's environment for Flower's processes: a private FLWR_HOME (apps are
    installed there; the user's ~/.flwr is untouched) and this `sweeper` on the path."""
    env = dict(os.environ)
    root = str(Path(sweeper.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # the trial's corpus and features, not a cache under the private HOME below: without
    # it every new federation synthesized the corpus again in each SuperExec (minutes)
    env["SWEEPER_CACHE"] = str(cache_root())
    env["FLWR_HOME"] = str(home / "flwr")
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["FLWR_TELEMETRY_ENABLED"] = "0"  # no event leaves the machine
    bells = bells_folder(home)
    if bells is not None:
        env[BELLS_ENV] = str(bells)
    env[ROSTER_ENV] = str(home / ROSTER)
    env[OWNER_ENV] = str(os.getpid())  # inherited by every process below: whose they are
    for legacy in (FLWR_INTERNAL_GRPC_CONTROL_API, FLWR_INTERNAL_GRPC_FLEET_API):
        env.pop(legacy, None)  # Flower's gRPC APIs would bind 0.0.0.0
    return env


def superexec_argv(runtime_api: str, ca: Path | None, name: str, role: str,
                   announcements: Path | None) -> list[str]:
    """Our SuperExec (`superexec.py`) for the Runtime API at `runtime_api`."""
    return [sys.executable, "-m", "sweeper.engines.deployment.superexec",
            "--runtime-api-address", runtime_api, "--name", name, "--role", role,
            *(["--root-certificates", str(ca)] if ca else []),
            *(["--announcements", str(announcements)] if announcements else [])]


def _listening(procs: Processes, name: str, host: str, argv_at, env: dict[str, str]
               ) -> int:
    """Start `argv_at(port)` as `name-<attempt>` on a free port of `host`; its port."""
    for attempt in range(3):  # a free port may be taken by another trial before we bind it
        port = free_port(host)
        proc = procs.start(f"{name}-{attempt}", argv_at(port), env)
        if wait_listening(proc, port, START_TIMEOUT_S):
            return port
        if proc.poll() is None:
            raise SweeperError(f"deployment: {name} not listening after "
                               f"{START_TIMEOUT_S:g} s")
        why = procs.log_tail(f"{name}-{attempt}")
        procs.discard(f"{name}-{attempt}")
    raise SweeperError(f"deployment: {name} did not start: {why}")


def start_link(home: Path, procs: Processes, env: dict[str, str], fleet_host: str,
               tls: bool, auth: bool, nodes: int, keys_on_disk: bool = True) -> Link:
    """Start the SuperLink on 127.0.0.1 (with a certificate and `nodes` registered
    SuperNode keys if asked) and, if its SuperNodes reach it at `fleet_host`, a Fleet
    gateway there; and the SuperExec that runs its ServerApps."""
    (home / ANNOUNCEMENTS).mkdir(exist_ok=True)
    creds = (make_credentials(home / "tls", [fleet_host, HOST], nodes if auth else 0,
                              keys_on_disk) if tls or auth else None)
    served = (["--ssl-certfile", str(creds.cert), "--ssl-keyfile", str(creds.key),
               "--ssl-ca-certfile", str(creds.ca)] if creds else ["--insecure"])
    port = _listening(procs, "superlink", HOST, lambda p: [
        sys.executable, "-m", "sweeper.engines.deployment.superlink", *served,
        *(["--enable-supernode-auth"] if auth else []),
        "--host", HOST, "--port", str(p), "--isolation", "process",
        "--disable-runtime-dependency-installation"], env)
    control = f"{HOST}:{port}"
    fleet = control
    if fleet_host != HOST:
        gateway = _listening(procs, "fleet-gateway", fleet_host, lambda p: gateway_argv(
            sys.executable, fleet_host, p, control, creds), env)
        fleet = f"{fleet_host}:{gateway}"
    procs.start("superexec-link", superexec_argv(control, creds.ca if creds else None,
                                                 "server", "server", home / ANNOUNCEMENTS),
                env)
    if creds is not None and auth:
        _register_nodes(control, creds)
    return Link(control, fleet, creds, auth)


def start(config: TrialConfig, home: Path, procs: Processes,
          network: Network | None = None,
          stack: contextlib.ExitStack | None = None) -> Federation:
    """Start the SuperLink and the SuperNodes (here, or on Ray's nodes: `stack` then
    closes their actors)."""
    scenario = config.scenario
    env = _env(home)
    roster_folder(home)
    on_ray = scenario.deploy_placement == "ray"
    if on_ray and network is not None:
        raise SweeperError("deploy_placement: ray runs on the cluster's own network: not "
                           "with deploy_network netns")
    # SuperNodes on other nodes reach the Fleet API at this node's address, not loopback;
    # over a network others share, with TLS and only the trial's SuperNodes admitted.
    fleet_host = (network.server_address if network
                  else ray.util.get_node_ip_address() if on_ray else HOST)
    auth = scenario.deploy_node_auth or on_ray
    link = start_link(home, procs, env, fleet_host, scenario.deploy_tls or auth, auth,
                      scenario.num_clients, keys_on_disk=not on_ray)
    creds, fleet = link.creds, link.fleet  # (`commands` goes to the actors: no keys in it)

    # SuperNodes on other machines have no folder of ours to read trials from.
    announcements = None if on_ray else home / ANNOUNCEMENTS

    def commands(partition: int, node_port: int, ca: Path | None, key: Path | None
                 ) -> list[tuple[str, list[str]]]:
        # The SuperNode's own Runtime API (for its ClientApps) stays on its loopback.
        prefix = network.exec_prefix(partition) if network else []
        return [(f"supernode-{partition}", [
            *prefix, sys.executable, "-m", "sweeper.engines.deployment.supernode",
            *(["--root-certificates", str(ca)] if ca else ["--insecure"]),
            *(["--auth-supernode-private-key", str(key)] if key else []),
            "--superlink", fleet,
            "--node-config", f"partition-id={partition} num-partitions={scenario.num_clients}",
            "--isolation", "process", "--host", HOST, "--port", str(node_port)]),
            (f"superexec-{partition}", [
                *prefix, *superexec_argv(f"{HOST}:{node_port}", None, f"client-{partition}",
                                         str(partition), announcements)])]

    if on_ray:
        remote = RaySuperNodes(scenario.num_clients, commands, env, creds.ca.read_bytes(),
                               creds.node_private_keys)
        if stack is not None:
            stack.callback(remote.close)
        return Federation(procs, home, link.control, network, creds.ca, remote)
    for partition in range(scenario.num_clients):
        key = creds.node_keys[partition] if creds is not None and auth else None
        for name, argv in commands(partition, free_port(HOST), creds.ca if creds else None,
                                   key):
            procs.start(name, argv, env)
    return Federation(procs, home, link.control, network, creds.ca if creds else None,
                      warm=["server", *(f"client-{p}" for p in range(scenario.num_clients))])


def _register_nodes(control: str, creds: Credentials) -> None:
    """With SuperNode authentication only registered public keys may join (what
    `flwr supernode register` does)."""
    client = _control(control, creds.ca)
    try:
        for public_key in creds.node_public_keys:
            client.RegisterNode(RegisterNodeRequest(public_key=public_key))
    finally:
        client.close()


def _roster(federation: Federation, config: TrialConfig, info: dict | None
            ) -> dict[str, int]:
    """Node id -> partition of the federation's SuperNodes (`roster.py`), waiting for those
    started here to enroll. Where some have not (Ray placed them, maybe on other machines)
    none is used, and if clients are sampled `info` says that the sampled partitions may
    differ from the simulation engine's."""
    clients = config.scenario.num_clients
    deadline = time.monotonic() + (START_TIMEOUT_S if federation.remote is None else 0.0)
    while len(roster := read_roster(federation.home / ROSTER)) < clients:
        if dead := federation.exited():
            raise SweeperError(f"deployment: {dead} while starting")
        if time.monotonic() >= deadline:
            if federation.remote is None:
                raise SweeperError(f"deployment: {clients - len(roster)} SuperNodes not "
                                   f"registered after {START_TIMEOUT_S:g} s")
            if int(config.leverages["clients_per_round"]) < clients and info is not None:
                info.setdefault("engine_notes", []).append(
                    "SuperNodes placed by Ray did not all enroll their partition: clients "
                    "sampled in Flower's node order, so not the simulation engine's partitions")
            roster = {}
            break
        time.sleep(0.01)
    return {str(node): partition for node, partition in roster.items()}


def _fab() -> Fab:
    from flwr.cli.build import build_fab_from_files

    content, _ = build_fab_from_files({"pyproject.toml": PYPROJECT.encode()})
    return Fab(hashlib.sha256(content).hexdigest(), content, {})


def _control(address: str, ca: Path | None = None) -> ControlHttpClient:
    return ControlHttpClient.from_server_address(
        server_address=address, insecure=ca is None,
        root_certificates=str(ca) if ca else None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="sweeper")])


def _announce(federation: Federation, config: TrialConfig) -> None:
    """Tell the federation's SuperExecs the trial, and wait until they are warm for it
    (so that no round's wall time carries the warm-up)."""
    folder = federation.home / ANNOUNCEMENTS
    federation.trials += 1
    announce(folder, federation.trials, config.to_json())
    ring("exec-*", federation.home / BELLS)  # idle, they would look only after PATIENCE_S
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while not all(ready_file(folder, name, federation.trials).exists()
                  for name in federation.warm):
        for name in federation.warm:
            failed = failed_file(ready_file(folder, name, federation.trials))
            if failed.exists():
                raise SweeperError(f"deployment: {name} could not warm up for the trial: "
                                   f"{failed.read_text()}")
        if dead := federation.exited():
            raise SweeperError(f"deployment: {dead} while warming for the trial")
        if time.monotonic() > deadline:
            raise SweeperError(f"deployment: SuperExecs not warm after {WARM_TIMEOUT_S:g} s")
        time.sleep(0.01)


def run(federation: Federation, config: TrialConfig, watcher=None,
        info: dict | None = None) -> list[RoundStats]:
    """Start the trial's run on the federation and wait for it to finish, answering the
    ServerApp's calls to `watcher` (a `server_app.RoundWatcher`) meanwhile."""
    _announce(federation, config)
    folder = federation.home / f"trial-{federation.trials}"  # this run's files
    folder.mkdir()
    stats_path = folder / "rounds.json"
    overrides = {TRIAL_CONFIG: config.to_json(), STATS_PATH: str(stats_path),
                 WIRE_INTERFACES: ",".join(c.host_if for c in federation.network.clients)
                 if federation.network else "",
                 NODE_PARTITIONS: json.dumps(_roster(federation, config, info))}
    answerer = None
    if watcher is not None:
        relay_dir = folder / "watcher"
        relay_dir.mkdir()
        overrides[WATCHER_DIR] = str(relay_dir)
        answerer = Answerer(relay_dir, watcher)
    control = _control(federation.superlink, federation.ca)
    try:
        res = control.StartRun(StartRunRequest(
            fab=fab_to_proto(_fab()), override_config=user_config_to_proto(overrides)))
        if not res.HasField("run_id"):
            raise SweeperError("deployment: the SuperLink did not start the run")
        ring("exec-server", federation.home / BELLS)  # its SuperExec starts the ServerApp
        run_id = res.run_id
        timeout_s = ROUND_TIMEOUT_S * (int(config.leverages["rounds"]) + 1)
        deadline = time.monotonic() + timeout_s
        next_check = 0.0
        while True:
            if answerer is not None:
                answerer.poll()
            # The run's status is asked of the SuperLink (a request it must serve) once a
            # second, and often once the ServerApp has written its rounds (a local file).
            if time.monotonic() < next_check and not stats_path.exists():
                time.sleep(ANSWER_S if answerer is not None else LOCAL_POLL_S)
                continue
            next_check = time.monotonic() + STATUS_POLL_S
            if stats_path.exists():
                time.sleep(LOCAL_POLL_S)
            run = control.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
            if run.status.status == Status.FINISHED:
                break
            # A lost SuperNode would hold the next round until Flower's heartbeat patience
            # (2 x 30 s) runs out, and then for ever for want of nodes: fail now, saying why.
            dead = federation.exited()
            if dead or time.monotonic() > deadline:
                with contextlib.suppress(Exception):
                    control.StopRun(StopRunRequest(run_id=run_id))
                why = (f"{dead} during the run" if dead
                       else f"run not finished after {timeout_s:g} s")
                raise SweeperError(f"deployment: {why}")
    finally:
        control.close()
    if info is not None:
        info["flower_run_bytes"] = {"sent": run.bytes_sent, "received": run.bytes_recv}
    if run.status.sub_status != SubStatus.COMPLETED:
        raise SweeperError(f"deployment: run {run.status.sub_status}: "
                           f"{run.status.details or 'no details'}")
    if not stats_path.exists():
        raise SweeperError("deployment: the ServerApp finished without writing its rounds")
    return read_stats(stats_path)
