"""`sweeper cluster up | status | down`: reserve nodes, start Ray on them, give them back.

The state of a cluster that is up (site, job, nodes, how to reach them) is kept in a small
JSON file, so `status` and `down` work from another shell; it holds no secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from g5k import G5kError, nodeenv, nodesetup, raycluster
from g5k.api import FAILED_STATES, Api, JobWaitTimeout, job_summary
from g5k.config import ClusterSpec, job_problem, job_refusal, shell_path
from g5k.credentials import Credentials, load_credentials
from g5k.forward import Forward
from g5k.ssh import KeyFile, Remote
from g5k.trial_energy import KwollectNodeEnergy

Say = Callable[[str], None]


def state_path() -> Path:
    return Path(os.environ.get("SWEEPER_G5K_STATE",
                               Path.home() / ".sweeper" / "g5k-cluster.json"))


@dataclass
class ClusterState:
    spec: dict
    job_id: int
    nodes: list[str] = field(default_factory=list)
    ray_started: list[str] = field(default_factory=list)
    submitted_here: bool = True
    env: dict = field(default_factory=dict)  # python_env's versions: Python, ray, torch, flwr

    @property
    def head(self) -> str:
        return self.nodes[0]

    def ray_address(self) -> str:
        return f"{self.head}:{self.spec['ray_port']}"

    def save(self) -> None:
        path = state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls) -> ClusterState:
        path = state_path()
        if not path.exists():
            raise G5kError(f"no cluster is up ({path} not found): `sweeper cluster up` first")
        return cls(**json.loads(path.read_text()))


def ray_token_file() -> Path:
    """The cluster's Ray token here: beside the state file, one per state file as there is
    one cluster up per state file. The nodes read the file of the same name in `~/.sweeper`
    of the NFS home they share: this very file when `up` runs on the site's frontend."""
    path = state_path()
    # the state file's own path in the name: clusters of two state files never share a token
    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return path.with_name(f"ray-token-{path.stem}-{tag}")


def ray_client_env() -> dict[str, str]:
    """What a driver's environment needs for `ray.init(address=...)` to be let in by the
    cluster's Ray; a token file open to others is refused."""
    return raycluster.client_env(ray_token_file())


class Session:
    """How to talk to Grid'5000 for one spec: the API, the frontend and the nodes."""

    def __init__(self, spec: ClusterSpec, dry_run: bool = False, say: Say | None = None,
                 credentials: Credentials | None = None):
        """`credentials`: default, those `load_credentials` finds."""
        self.spec, self.dry_run = spec, dry_run
        self.say = say or print
        credentials = credentials or load_credentials()
        self.user = spec.user or (credentials and credentials.username) or os.environ.get(
            "USER", "root")
        self.poll_s = 5.0  # between two looks at a waiting job
        self.api = Api(spec.api_url, credentials, dry_run, self.say)
        self._key = KeyFile(spec.ssh_key)  # unlocked once per session, only if needed
        self._jump = (Remote(spec.jump_host, self.user, self._key, spec.jump_port,
                             dry_run=dry_run, say=self.say, known_hosts=spec.known_hosts)
                      if spec.jump_host else None)
        self._remotes: dict[str, Remote] = {}

    def remote(self, host: str) -> Remote:
        """One SSH connection per host for the session, through the jump host if any."""
        if host not in self._remotes:
            self._remotes[host] = Remote(host, self.user, self._key, self.spec.ssh_port,
                                         via=self._jump, dry_run=self.dry_run, say=self.say,
                                         known_hosts=self.spec.known_hosts)
        return self._remotes[host]

    def close(self) -> None:
        for remote in self._remotes.values():
            remote.close()
        self._remotes.clear()

    def check_key(self) -> None:
        self._key.check_usable()

    def frontend(self) -> Remote:
        return self.remote(self.spec.frontend_host)

    # Reservation, by the REST API or by OAR's commands on the frontend
    def reserve(self) -> tuple[int, bool]:
        if self.spec.job_id is not None:
            return self.spec.job_id, False
        if (problem := job_problem(self.spec)) is not None:
            raise G5kError(f"not submitted: {problem}")
        described = self._described()
        if (refusal := job_refusal(self.spec, described)) is not None:
            raise G5kError(f"not submitted: {refusal}")
        if self.spec.reservation_method == "api":
            job_id = self.api.submit(self.spec, self.job_types(described))
            if self.dry_run and self.spec.cluster and "exotic" not in self.spec.oar_types:
                self.say(f"[dry-run] before that POST: GET {self.api.base_url}/sites/"
                         f"{self.spec.site}/clusters/{self.spec.cluster}, and exotic joins "
                         "the types if it says exotic: true")
            return job_id, True
        # oarsub(1) options (oar-team/oar sources/core/qfunctions/oarsub): -t once per type
        options = [f"-l {shlex.quote(self.spec.resources)}"]
        if self.spec.oar_properties:
            options.append(f"-p {shlex.quote(self.spec.oar_properties)}")
        options += [f"-t {shlex.quote(kind)}" for kind in self.spec.oar_types]
        if self.spec.queue != "default":
            options.append(f"-q {shlex.quote(self.spec.queue)}")
        if self.spec.project:
            options.append(f"--project {shlex.quote(self.spec.project)}")
        if self.spec.reservation:
            options.append(f"-r {shlex.quote(self.spec.reservation)}")
        out = self.frontend().run(f"oarsub {' '.join(options)} 'sleep infinity'")
        found = re.search(r"OAR_JOB_ID=(\d+)", out)
        if self.dry_run:
            return 0, True
        if not found:
            raise G5kError(f"oarsub on {self.spec.frontend_host} gave no job id: {out.strip()}")
        return int(found.group(1)), True

    def _described(self) -> dict | None:
        """The reference API's description of the job's cluster (None: no cluster named,
        a dry run, or the API unreachable: then OAR alone judges the job)."""
        if self.dry_run or not self.spec.cluster:
            return None
        try:
            return self.api.cluster_description(self.spec.site, self.spec.cluster)
        except G5kError as exc:
            self.say(f"reference API: {exc}: the job's types and queue are left to OAR")
            return None

    def job_types(self, described: dict | None) -> list[str]:
        """The spec's OAR types, plus exotic when the reference API marks its cluster
        `exotic: true`: Grid'5000 runs no job on an exotic cluster without that type
        (grid5000/reference-repository lib/refrepo/gen/wiki/generators/site_hardware.rb
        adds `-t exotic` to such a cluster's reservation command)."""
        types = self.spec.oar_types
        if described is None or "exotic" in types:
            return types
        return [*types, "exotic"] if described.get("exotic") is True else types

    def wait_nodes(self, job_id: int, timeout_s: float = 3600) -> list[str]:
        """The job's nodes once it runs; `JobWaitTimeout` after `timeout_s`, the job kept."""
        placeholders = [f"<node-{i + 1}>" for i in range(self.spec.nodes)]
        if self.spec.reservation_method == "api":
            nodes = self.api.wait_running(self.spec.site, job_id, timeout_s, self.poll_s)
            return placeholders if self.dry_run else nodes
        deadline = time.monotonic() + timeout_s
        while True:
            out = self.frontend().run(f"oarstat -j {job_id} -J")
            if self.dry_run:
                return placeholders
            job = json.loads(out)[str(job_id)]
            state = str(job["state"]).lower()  # oarstat -J: OAR's own case, "Running"
            if state == "running":
                return list(job["assigned_network_address"])
            if state in FAILED_STATES:
                raise G5kError(f"OAR job {job_id} ended ({job['state']}) before running")
            if time.monotonic() > deadline:
                raise JobWaitTimeout(self.spec.site, job_id, {"state": state}, timeout_s)
            time.sleep(self.poll_s)

    def release(self, job_id: int) -> None:
        if self.spec.reservation_method == "api":
            self.api.delete(self.spec.site, job_id)
        else:
            self.frontend().run(f"oardel {job_id}")

    # Ray
    @property
    def ray_token(self) -> str:
        """The token file on the frontend and nodes, as a word their shell expands."""
        return raycluster.home_token(ray_token_file().name)

    def install_ray_token(self) -> None:
        """A fresh token for this cluster's Ray, here and in the home the nodes share."""
        token = ray_token_file()
        if not self.dry_run:
            raycluster.new_token(token)
        raycluster.copy_token(self.frontend(), token, token.name)

    def ray_command(self, *args: str) -> str:
        return (f"{raycluster.token_env(self.ray_token)} {shell_path(self.spec.python_env)}"
                "/bin/ray " + " ".join(args))

    def ray_node(self, state: ClusterState, index: int) -> raycluster.RayNode:
        return raycluster.ray_node(self.spec, state.job_id, index, state.nodes[index])


def up(spec: ClusterSpec, dry_run: bool = False, say: Say | None = None,
       timeout_s: float = 3600, poll_s: float = 5) -> ClusterState:
    """Reserve (or reuse) the job, install the environment once, start Ray head + workers.
    A half-started cluster is torn down (Ray stopped, a job we submitted deleted). A job
    still waiting after `timeout_s` is kept and recorded, for `status` and `down`."""
    session = Session(spec, dry_run, say)
    session.poll_s = poll_s
    try:
        return _up(session, timeout_s)
    finally:
        session.close()


def _up(session: Session, timeout_s: float) -> ClusterState:
    spec, dry_run = session.spec, session.dry_run
    if (mismatch := nodeenv.python_mismatch(spec)) is not None:
        raise G5kError(mismatch)  # before reserving: Ray would refuse this driver
    if not dry_run:  # no key to log in with: say so before reserving
        session.check_key()
    job_id, submitted = session.reserve()
    submitted = submitted or _kept_earlier(job_id)
    state = ClusterState(asdict(spec), job_id, submitted_here=submitted)
    try:
        state.nodes = session.wait_nodes(job_id, timeout_s)
        if not state.nodes:
            raise G5kError(f"OAR job {job_id} runs but lists no node")
        nodeenv.ensure(spec, session.remote(state.head))  # NFS home: one env for all
        # the driver against the env (`cluster check` tells before anything is reserved)
        state.env = nodeenv.verify(spec, session.remote(state.head))
        for host in state.nodes:
            nodesetup.apply(spec, session.remote(host))
        session.install_ray_token()
        for index, host in enumerate(state.nodes):
            state.ray_started.append(host)  # before: a half-started node is stopped too
            raycluster.start(spec, session.remote(host), session.ray_node(state, index),
                             state.ray_address(), session.ray_token)
        raycluster.wait_alive(spec, session.remote(state.head), state.ray_address(),
                              len(state.nodes), session.ray_token)
    except JobWaitTimeout as exc:
        # e.g. an advance reservation hours ahead: deleting it would lose the slot
        state.save()
        raise G5kError(f"{exc}: kept and recorded in {state_path()}; `sweeper cluster "
                       f"status` shows it, `sweeper cluster down` {_down_does(state)}, `up` "
                       f"with job_id: {job_id} in the cluster file waits for it again") from None
    except G5kError:
        _teardown(session, state)
        raise
    if not dry_run:
        state.save()
    prefix = "[dry-run] nothing was run; " if dry_run else ""
    if state.env:
        session.say(f"{spec.python_env}: {nodeenv.describe(state.env)}, as here")
    session.say(f"{prefix}Ray is up on {len(state.nodes)} node(s), head {state.head} "
                f"(address {state.ray_address()}). Dashboard: `sweeper cluster forward`, or "
                f"{dashboard_ssh_command(spec, session.user, state.head)}  then open "
                f"http://127.0.0.1:{spec.dashboard_port}")
    return state


def _down_does(state: ClusterState) -> str:
    return "deletes it" if state.submitted_here else "forgets it (a job_id you gave stays)"


def _kept_earlier(job_id: int) -> bool:
    """Whether the recorded cluster is this job, submitted by an `up` that stopped waiting
    for it: it stays ours to delete at `down`."""
    try:
        saved = json.loads(state_path().read_text())
    except (OSError, ValueError):
        return False
    return saved.get("job_id") == job_id and saved.get("submitted_here") is True


def dashboard_ssh_command(spec: ClusterSpec, user: str, head: str) -> str:
    """The OpenSSH command that forwards the head's dashboard to this machine."""
    jump = ""
    if spec.jump_host:
        port = f":{spec.jump_port}" if spec.jump_port != 22 else ""
        jump = f"-J {user}@{spec.jump_host}{port} "
    port = f"-p {spec.ssh_port} " if spec.ssh_port != 22 else ""
    return (f"ssh {jump}{port}-N -L {spec.dashboard_port}:127.0.0.1:{spec.dashboard_port} "
            f"{user}@{head}")


def open_forward(local_port: int | None = None, say: Say | None = None) -> Forward:
    """Forward a local port (default: the dashboard's) to the head's Ray dashboard, through
    the jump host; it serves until `close()`. The SSH connection stays open meanwhile."""
    state = ClusterState.load()
    spec = ClusterSpec(**state.spec)
    session = Session(spec, say=say or (lambda _line: None))
    port = spec.dashboard_port if local_port is None else local_port
    return Forward(session.remote(state.head), "127.0.0.1", spec.dashboard_port, port)


def node_energy_source(state: ClusterState | None = None) -> KwollectNodeEnergy:
    """Kwollect joules of a trial's node(s) over its window, for `run_sweep(node_energy=)`."""
    state = state or ClusterState.load()
    spec = ClusterSpec(**state.spec)
    return KwollectNodeEnergy(Api(spec.api_url, load_credentials()), spec.site, spec.cluster)


def status(say: Say | None = None) -> str:
    state = ClusterState.load()
    session = Session(ClusterSpec(**state.spec), say=say or (lambda _line: None))
    try:
        job = session.api.job(state.spec["site"], state.job_id) if (
            state.spec["reservation_method"] == "api") else {"state": "(ask oarstat)"}
        ray = session.remote(state.head).run(session.ray_command(
            "status", f"--address={state.ray_address()}"), check=False) if state.nodes else ""
    finally:
        session.close()
    line = f"job {state.job_id} on {state.spec['site']}: {job_summary(job)}"
    if not state.nodes:  # kept by an `up` that stopped waiting for it
        return (f"{line}; no nodes yet, Ray not started (`up` with job_id: {state.job_id} "
                f"waits for it, `down` {_down_does(state)})")
    return (f"{line}; nodes {', '.join(state.nodes)}; Ray on "
            f"{', '.join(state.ray_started) or 'none'}\n{ray.strip()}")


def down(dry_run: bool = False, say: Say | None = None) -> None:
    state = ClusterState.load()
    session = Session(ClusterSpec(**state.spec), dry_run, say)
    try:
        _teardown(session, state)
    finally:
        session.close()
    if not dry_run:
        state_path().unlink(missing_ok=True)


def _teardown(session: Session, state: ClusterState) -> None:
    """Stop the Ray this cluster started (workers first) and delete its token, give back a
    job we submitted."""
    errors = []
    had_ray = bool(state.ray_started)
    for index in reversed(range(len(state.ray_started))):
        node = session.ray_node(state, index)
        try:
            problem = raycluster.stop(session.remote(node.host), node)
        except G5kError as exc:
            problem = str(exc)
        if problem:
            errors.append(problem)
    state.ray_started.clear()
    if had_ray:
        try:
            problem = raycluster.remove_token(session.frontend(), ray_token_file().name)
        except G5kError as exc:
            problem = str(exc)
        if problem:
            errors.append(problem)
    if not session.dry_run:
        ray_token_file().unlink(missing_ok=True)
    if state.submitted_here:
        try:
            session.release(state.job_id)
        except G5kError as exc:
            errors.append(str(exc))
    if errors:
        session.say("teardown incomplete: " + "; ".join(errors))
