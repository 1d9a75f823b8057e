"""`sweeper cluster check`: what `cluster up` needs, tried without reserving anything.

One line per step, `ok`, `warn` (passes), `fail` (with its fix) or `skip` (a prerequisite
failed): the API credentials, the API itself (TLS included), SSH through the jump host to
the frontend, the nodes' Python environment (read on the frontend, which sees the NFS home)
against this driver's versions, the cluster's wattmeter coverage and the job's types and
queue against the reference API. It passes when no step fails or is skipped.

Wattmeter coverage: a wattmetre on every node is ok; on some nodes only, or only a PDU or
BMC meter, is a warning (node_energy_j is measured, more coarsely on some nodes); no power
metric collected by default is a failure (node_energy_j would be NaN on every trial).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from g5k import G5kError, nodeenv
from g5k.api import Api
from g5k.cluster import Session
from g5k.config import ClusterSpec, job_refusal
from g5k.credentials import Credentials, credentials_path, load_credentials
from g5k.kwollect import POWER_METRICS

Say = Callable[[str], None]
OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
WATTMETER_PROPERTY = "wattmeter='YES'"


@dataclass(frozen=True)
class Step:
    name: str
    status: str  # OK, WARN, FAIL or SKIP
    text: str

    @property
    def passed(self) -> bool:
        return self.status in (OK, WARN)

    @property
    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {' '.join(self.text.split())}"


def skipped(name: str, prerequisite: Step) -> Step:
    return Step(name, SKIP, f"not checked: {prerequisite.name} failed")


def run(spec: ClusterSpec, say: Say = print) -> bool:
    """Check every step, saying each line as it comes; whether all passed."""
    steps: list[Step] = []

    def report(step: Step) -> Step:
        steps.append(step)
        say(step.line)
        return step

    creds, credentials = check_credentials(spec)
    report(creds)
    described: dict[str, Any] | None = None
    if creds.passed:
        api, described = check_api(spec, credentials)
    else:
        api = skipped("api", creds)
    report(api)
    said: list[str] = []  # what SSH says: a host key trusted on first use, commands run
    session = Session(spec, say=said.append, credentials=credentials or Credentials())
    try:
        ssh = report(check_ssh(session, said))
        report(check_env(spec, session) if ssh.passed else skipped("env", ssh))
    finally:
        session.close()
    report(check_wattmeter(spec, described) if api.passed else skipped("wattmeter", api))
    report(check_jobs(spec, described) if api.passed else skipped("jobs", api))
    return all(step.passed for step in steps)


def check_credentials(spec: ClusterSpec) -> tuple[Step, Credentials | None]:
    path = credentials_path()
    try:
        credentials = load_credentials()
    except G5kError as exc:
        return Step("credentials", FAIL, str(exc)), None
    if credentials is None or credentials.password is None:
        if spec.jump_host:  # outside Grid'5000, where the API asks for a login
            return Step("credentials", FAIL, f"none (no username and password in {path}, no "
                        f"G5K_USER/G5K_PASSWORD), and the API asks for them from outside "
                        f"Grid'5000 (jump_host: {spec.jump_host}): write username: and "
                        f"password: to {path}, then chmod 600 {path}"), credentials
        return Step("credentials", OK, "none, as on a frontend (jump_host: null)"), credentials
    source = ("G5K_USER/G5K_PASSWORD" if os.environ.get("G5K_USER")
              and os.environ.get("G5K_PASSWORD") else str(path))
    return Step("credentials", OK, f"{credentials.username} from {source}"), credentials


def check_api(spec: ClusterSpec,
              credentials: Credentials | None) -> tuple[Step, dict[str, Any] | None]:
    """The site's (or its cluster's) description, read with the CA `cluster up` uses."""
    api = Api(spec.api_url, credentials)
    try:
        if spec.cluster:
            described = api.cluster_description(spec.site, spec.cluster)
        else:
            described = None
            api._call("GET", f"/sites/{spec.site}")  # Api has no public call for the site
    except G5kError as exc:
        return Step("api", FAIL, str(exc)), None
    if api.verify is False:
        return Step("api", WARN, f"{api.base_url} (TLS certificate not verified: "
                    f"verify_ssl: false in {credentials_path()})"), described
    ca = "certifi's CA bundle" if api.verify is True else f"CA {api.verify}"
    return Step("api", OK, f"{api.base_url} ({ca})"), described


def check_ssh(session: Session, said: list[str]) -> Step:
    """A command on the frontend, through the jump host; `said`: what the session says."""
    try:
        session.frontend().execute("true", timeout_s=60)
    except G5kError as exc:
        return Step("ssh", FAIL, str(exc))
    trusted = [n.removeprefix("ssh: ") for n in said if "trusted on first use" in n]
    return Step("ssh", OK, session.frontend().label
                + (f" ({'; '.join(trusted)})" if trusted else ""))


def check_env(spec: ClusterSpec, session: Session) -> Step:
    """The env in the NFS home, as the frontend sees it, against this driver."""
    if (mismatch := nodeenv.python_mismatch(spec)) is not None:
        return Step("env", FAIL, mismatch)
    frontend = session.frontend()
    here = nodeenv.local_versions()
    try:
        there, has_project = nodeenv.read_versions(frontend, spec)
    except G5kError as exc:
        return Step("env", FAIL, str(exc))
    if there is None and not has_project:
        return Step("env", FAIL, f"no {spec.python_env} and no {spec.project_dir}/"
                    f"pyproject.toml on {frontend.host}: git clone this project to "
                    f"{spec.project_dir} there (`sweeper cluster up` builds the env from it)")
    if there is None:
        return Step("env", WARN, f"{spec.python_env} not built yet: `sweeper cluster up` "
                    f"builds it on the first node (uv, Python {spec.env_python}, from "
                    f"{spec.project_dir}); here {nodeenv.describe(here)}")
    if problems := nodeenv.mismatches(here, there):
        return Step("env", FAIL, f"{spec.python_env} has {', '.join(problems)}: "
                    + nodeenv.mismatch_fix(spec))
    return Step("env", OK, f"{spec.python_env}: {nodeenv.describe(there)}, as here")


def check_wattmeter(spec: ClusterSpec, described: dict[str, Any] | None) -> Step:
    if not spec.cluster or described is None:
        return Step("wattmeter", WARN, "no cluster in the file (properties only): not checked; "
                    "each trial's node says which power metric it has")
    usable = [e for e in described.get("metrics", [])
              if e.get("name") in POWER_METRICS and e.get("period")]
    usable.sort(key=lambda e: POWER_METRICS.index(e["name"]))
    everywhere = [e for e in usable if "only_for" not in e]
    fallback = (f"{everywhere[0]['name']} (every {everywhere[0]['period'] / 1000:g} s)"
                if everywhere else "no power metric")
    name = spec.cluster
    if not usable:
        on_demand = [e["name"] for e in described.get("metrics", [])
                     if e.get("name") in POWER_METRICS]
        why = f" ({', '.join(on_demand)} on demand only)" if on_demand else ""
        return Step("wattmeter", FAIL, f"{name}: no node power metric collected by default in "
                    f"Kwollect{why}: node_energy_j would be NaN; choose a cluster with "
                    f"wattmeters (properties: \"{WATTMETER_PROPERTY}\"), or leave "
                    "node_energy_j out of the space")
    best = usable[0]
    period = f"every {best['period'] / 1000:g} s"
    if best["name"] != POWER_METRICS[0]:
        return Step("wattmeter", WARN, f"{name}: no wattmetre; node_energy_j from "
                    f"{best['name']} ({period}{', some nodes only' if 'only_for' in best else ''}"
                    f"), coarser; a cluster with wattmeters: properties: "
                    f"\"{WATTMETER_PROPERTY}\"")
    if "only_for" not in best:
        return Step("wattmeter", OK, f"{name}: {best['name']} {period} on every node")
    nodes = best["only_for"]
    if WATTMETER_PROPERTY in (spec.properties or "").replace('"', "'"):
        return Step("wattmeter", OK, f"{name}: {best['name']} {period} on {len(nodes)} nodes "
                    f"({nodes[0]}…{nodes[-1]}), which properties: {WATTMETER_PROPERTY} reserves")
    return Step("wattmeter", WARN, f"{name}: {best['name']} {period} on {len(nodes)} nodes "
                f"only ({nodes[0]}…{nodes[-1]}), {fallback} on the others; to get only "
                f"those: properties: \"{WATTMETER_PROPERTY}\"")


def check_jobs(spec: ClusterSpec, described: dict[str, Any] | None) -> Step:
    """The job's types and queue against the cluster's `exotic` and `queues`."""
    types = ", ".join(spec.oar_types) or "none"
    if not spec.cluster or described is None:
        return Step("jobs", OK, f"types {types}, queue {spec.queue} (no cluster named: "
                    "nothing to compare with the reference API)")
    if (refusal := job_refusal(spec, described)) is not None:
        return Step("jobs", FAIL, refusal)
    exotic = described.get("exotic") is True and "exotic" not in spec.oar_types
    added = " (+ exotic, added at submission)" if exotic else ""
    return Step("jobs", OK, f"{spec.cluster}: types {types}{added}, queue {spec.queue}")
