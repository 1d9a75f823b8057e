"""The cluster file: where, what and how long to reserve, and how to reach the nodes."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from g5k import G5kError

GOVERNORS = ("performance", "powersave", "userspace", "ondemand", "conservative",
             "schedutil")
JOB_TYPES = ("default", "besteffort", "night", "day", "deploy", "exotic", "allow_classic_ssh")


@dataclass(frozen=True)
class ClusterSpec:
    site: str
    nodes: int = 1
    cluster: str | None = None  # or `properties`
    properties: str | None = None  # raw OAR properties, e.g. "wattmeter='YES'"
    walltime: str = "1:00:00"
    job_type: str = "default"
    reservation: str | None = None  # "YYYY-MM-DD HH:MM:SS": advance reservation
    job_id: int | None = None  # reuse a running job instead of submitting one
    python_env: str = "~/sweeper-venv"  # virtualenv in the NFS home, created once
    jump_host: str | None = "access.grid5000.fr"  # None: direct (on a frontend)
    jump_port: int = 22
    frontend: str | None = None  # default: the site's frontend, "<site>"
    user: str | None = None  # default: the credentials' username
    ssh_key: str = "~/.ssh/id_rsa"
    ssh_port: int = 22
    api_url: str = "https://api.grid5000.fr/stable"
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
    if spec.job_type not in JOB_TYPES:
        raise G5kError(f"{path}: job_type: {spec.job_type!r} is not one of {JOB_TYPES}")
    if spec.cpu_governor is not None and spec.cpu_governor not in GOVERNORS:
        raise G5kError(f"{path}: cpu_governor: {spec.cpu_governor!r} is not one of {GOVERNORS}")
    if spec.reservation_method not in ("api", "oarsub"):
        raise G5kError(f"{path}: reservation_method: must be api or oarsub")
    return spec


def _check_type(path: Path, key: str, value: Any, declared: str) -> None:
    if value is None and "None" in declared:
        return
    kind = {"int": int, "str": str, "bool": bool}[declared.split(" ")[0]]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise G5kError(f"{path}: {key}: must be {kind.__name__}, got {value!r}")
