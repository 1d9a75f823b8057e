"""The cluster file: where, what and how long to reserve, and how to reach the nodes."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from g5k import G5kError

GOVERNORS = ("performance", "powersave", "userspace", "ondemand", "conservative",
             "schedutil")
# OAR job types a job may carry, several at once (grid5000/g5k-api
# app/models/grid5000/job.rb: `types`, an array). "deploy" is refused: see `job_problem`.
JOB_TYPES = ("besteffort", "night", "day", "exotic", "allow_classic_ssh")
# Grid'5000's OAR queues a user submits to: OAR's own default and besteffort
# (oar-team/oar sources/core/database/default_data.sql), production and testing from the
# reference API's cluster `queues`, and abaca, the production queue's other name
# (grid5000/reference-repository lib/refrepo/gen/reference-api.rb adds either with the
# other). admin is OAR's queue for administrators only.
QUEUES = ("default", "production", "abaca", "besteffort", "testing")
DEPLOY_REFUSED = "nothing runs kadeploy here; sudo-g5k is unavailable in deploy jobs"
# Paths pasted into remote shell commands: safe characters only (and quoted where used).
SAFE_PATH = re.compile(r"(~/)?[A-Za-z0-9._+@/-]+")
SHELL_PATHS = ("python_env", "project_dir")


@dataclass(frozen=True)
class ClusterSpec:
    site: str
    nodes: int = 1
    cluster: str | None = None  # or `properties`
    properties: str | None = None  # raw OAR properties, e.g. "wattmeter='YES'"
    walltime: str = "1:00:00"
    job_types: list[str] = field(default_factory=list)  # OAR types, e.g. [night] or [exotic]
    job_type: str = "default"  # the older one-type form, added to job_types unless default
    queue: str = "default"  # OAR queue: see QUEUES
    project: str | None = None  # OAR project the job is accounted to (default: UMS's)
    reservation: str | None = None  # "YYYY-MM-DD HH:MM:SS": advance reservation
    job_id: int | None = None  # reuse a running job instead of submitting one
    python_env: str = "~/sweeper-venv"  # virtualenv in the NFS home, built once on a node
    env_python: str = "3.11"  # the Python `up` builds python_env with (uv installs it)
    project_dir: str = "~/sweeper"  # this project in the NFS home, installed in python_env
    jump_host: str | None = "access.grid5000.fr"  # None: direct (on a frontend)
    jump_port: int = 22
    frontend: str | None = None  # default: the site's frontend, "<site>"
    user: str | None = None  # default: the credentials' username
    ssh_key: str = "~/.ssh/id_rsa"  # private key file, tried after ssh-agent's keys
    known_hosts: str = "~/.ssh/known_hosts"  # host keys: checked, and saved on first use
    ssh_port: int = 22
    api_url: str | None = None  # default: uri in ~/.python-grid5000.yaml, else the public API
    ray_port: int = 6379
    ray_client_port: int = 10001
    ray_cpus: int | None = None  # CPUs each node offers to Ray (default: all)
    ray_dir: str = "/tmp/sweeper-ray"  # node-local; <ray_dir>/<job>-<i>: temp dir, log, pid
    dashboard: bool = True
    dashboard_port: int = 8265
    reservation_method: str = "api"  # "api" | "oarsub" (over SSH on the frontend)
    rapl_readable: bool = False  # sudo-g5k: RAPL energy counters readable by the user
    cpufreq_writable: bool = False  # sudo-g5k: cpufreq files writable (speed leverages)
    cpu_governor: str | None = None  # sudo-g5k: this governor on every core for the job

    @property
    def oar_properties(self) -> str | None:
        parts = [f"cluster='{self.cluster}'"] if self.cluster else []
        if self.properties:
            parts.append(f"({self.properties})")
        return " AND ".join(parts) or None

    @property
    def resources(self) -> str:
        return f"nodes={self.nodes},walltime={self.walltime}"

    @property
    def frontend_host(self) -> str:
        return self.frontend or self.site

    @property
    def oar_types(self) -> list[str]:
        """The job's OAR types as given: `job_types`, then `job_type` unless "default"."""
        given = [*self.job_types, *([self.job_type] if self.job_type != "default" else [])]
        return list(dict.fromkeys(given))


def job_problem(spec: ClusterSpec) -> str | None:
    """What OAR or this tool would refuse in the job's types, queue or project, as
    "key: why"; None when nothing. Checked at load and again before anything is submitted."""
    if "deploy" in spec.oar_types:
        key = "job_types" if "deploy" in spec.job_types else "job_type"
        return f"{key}: deploy: {DEPLOY_REFUSED}"
    if spec.job_type not in ("default", *JOB_TYPES):
        return f"job_type: {spec.job_type!r} is not one of default, {', '.join(JOB_TYPES)}"
    for kind in spec.job_types:
        if kind not in JOB_TYPES:
            return f"job_types: {kind!r} is not one of {', '.join(JOB_TYPES)}"
    if spec.queue not in QUEUES:
        return f"queue: {spec.queue!r} is not one of {', '.join(QUEUES)}"
    if spec.project is not None and not spec.project.strip():
        return "project: must be a project name, or left out"
    if spec.reservation and "besteffort" in (spec.queue, *spec.oar_types):
        # OAR's admission rule 7 (oar-team/oar pg_default_admission_rules.sql)
        return "reservation: a besteffort job cannot be an advance reservation"
    return None


# Grid'5000's production queue has a second name (its reference API lists either)
SAME_QUEUE = {"production": "abaca", "abaca": "production"}


def job_refusal(spec: ClusterSpec, described: dict[str, Any] | None) -> str | None:
    """What the cluster, as the reference API describes it (`exotic`, `queues`), would
    refuse in the job, as "key: why"; None when nothing (or no description to compare)."""
    if not spec.cluster or described is None:
        return None
    name = spec.cluster
    if (described.get("exotic") is True and "exotic" not in spec.oar_types
            and spec.reservation_method == "oarsub"):
        return (f"job_types: {name} is exotic: add exotic (with oarsub the job gets only the "
                "types listed)")
    queues = [str(q) for q in described.get("queues") or []]
    if queues and spec.queue != "besteffort" and spec.queue not in queues and (
            SAME_QUEUE.get(spec.queue) not in queues):
        takes = [q for q in queues if q != "admin"]
        return (f"queue: {name} takes jobs in {', '.join(takes) or 'none'}, not {spec.queue}:"
                f" set queue: {takes[0] if takes else 'default'}")
    return None


def shell_path(path: str) -> str:
    """`path` as one word for a remote shell: quoted, a leading `~/` left to the shell to
    expand (POSIX: the tilde prefix ends at the first unquoted slash)."""
    if path.startswith("~/"):
        rest = path[2:]
        return "~/" + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)


def load_cluster(path: str | Path) -> ClusterSpec:
    """Read and validate a cluster file; one-line errors naming the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise G5kError(f"{path}: file not found") from None
    except yaml.YAMLError:
        raise G5kError(f"{path}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise G5kError(f"{path}: top level must be a mapping")
    types = {f.name: str(f.type) for f in fields(ClusterSpec)}
    for key, value in raw.items():
        if key not in types:
            raise G5kError(f"{path}: {key}: unknown key (allowed: {', '.join(types)})")
        _check_type(path, key, value, types[key])
    if "site" not in raw:
        raise G5kError(f"{path}: site: missing")
    spec = ClusterSpec(**raw)
    if spec.nodes < 1:
        raise G5kError(f"{path}: nodes: must be >= 1")
    if not re.fullmatch(r"\d+:\d{2}(:\d{2})?", spec.walltime):
        raise G5kError(f"{path}: walltime: {spec.walltime!r} is not H:MM[:SS]")
    if (problem := job_problem(spec)) is not None:
        raise G5kError(f"{path}: {problem}")
    if spec.cpu_governor is not None and spec.cpu_governor not in GOVERNORS:
        raise G5kError(f"{path}: cpu_governor: {spec.cpu_governor!r} is not one of {GOVERNORS}")
    if spec.reservation_method not in ("api", "oarsub"):
        raise G5kError(f"{path}: reservation_method: must be api or oarsub")
    for key in SHELL_PATHS:
        if not SAFE_PATH.fullmatch(getattr(spec, key)) or ".." in getattr(spec, key):
            raise G5kError(f"{path}: {key}: {getattr(spec, key)!r} must be a path of letters, "
                           "digits and . _ + @ / - (~/ allowed at the start), without ..")
    if not re.fullmatch(r"3\.\d+(\.\d+)?", spec.env_python):
        raise G5kError(f"{path}: env_python: {spec.env_python!r} is not a Python version "
                       "such as 3.11")
    _check_ssh_files(path, spec)
    return spec


def _check_ssh_files(path: Path, spec: ClusterSpec) -> None:
    """Paths only: the key may be absent when ssh-agent holds it."""
    for key in ("ssh_key", "known_hosts"):
        if not getattr(spec, key).strip():
            raise G5kError(f"{path}: {key}: must be a file path")
    if spec.ssh_key.endswith(".pub"):
        raise G5kError(f"{path}: ssh_key: {spec.ssh_key} is a public key; give the private "
                       f"key file ({spec.ssh_key.removesuffix('.pub')})")


def _check_type(path: Path, key: str, value: Any, declared: str) -> None:
    if value is None and "None" in declared:
        return
    if declared.startswith("list[str]"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise G5kError(f"{path}: {key}: must be a list of str, got {value!r}")
        return
    kind = {"int": int, "str": str, "bool": bool}[declared.split(" ")[0]]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise G5kError(f"{path}: {key}: must be {kind.__name__}, got {value!r}")
