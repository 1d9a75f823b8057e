"""The Grid'5000 REST API: OAR jobs, the reference API and Kwollect metrics.

Every call goes through `_call`, which in dry-run mode only reports what it would send.
Credentials travel in the HTTP auth header only.

Jobs have the shapes grid5000/g5k-api gives them: submitted with its `JobSubmit` fields
(app/models/grid5000/job.rb: resources, command, properties, reservation, types (a list),
project, name, queue), read back with OAR's state lower-cased (lib/oar/job.rb `state`).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from urllib3.exceptions import InsecureRequestWarning

from g5k import G5kError
from g5k.config import ClusterSpec, job_problem
from g5k.credentials import Credentials

Say = Callable[[str], None]
DEFAULT_API_URL = "https://api.grid5000.fr/stable"
# Inside Grid'5000 the API and Kwollect certificates are signed by the Grid'5000 CA, which
# the system bundle holds and certifi's lacks; python-grid5000 1.2.5 uses this bundle when
# it exists (grid5000/__init__.py DEFAULT_CA_BUNDLE). $G5K_CA_BUNDLE names another one.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# OAR 2.5's job states (oar-team/oar sources/core/database/mysql_structure.sql, jobs.state),
# lower-cased by the API. A job in one of FAILED_STATES before running will never run;
# suspended and resuming ones were running and will again.
JOB_STATES = ("waiting", "hold", "tolaunch", "toerror", "toackreservation", "launching",
              "running", "suspended", "resuming", "finishing", "terminated", "error")
FAILED_STATES = ("toerror", "error", "finishing", "terminated")


class JobWaitTimeout(G5kError):
    """The job did not run within the wait. It is left as it is: nothing deletes it."""

    def __init__(self, site: str, job_id: int, job: dict[str, Any], timeout_s: float) -> None:
        super().__init__(f"OAR job {job_id} on {site} still {job_summary(job)} after "
                         f"{timeout_s:.0f} s")
        self.job_id, self.state = job_id, job.get("state")


def job_summary(job: dict[str, Any]) -> str:
    """The job's state, and OAR's predicted start (`scheduled_at`, seconds since the epoch)
    when it gives one: "waiting (OAR expects it to start at 2026-12-01 18:00:00 UTC)"."""
    state = str(job.get("state"))
    if state != "running" and job.get("scheduled_at"):
        start = datetime.fromtimestamp(int(job["scheduled_at"]), UTC)
        return f"{state} (OAR expects it to start at {start:%Y-%m-%d %H:%M:%S} UTC)"
    return state


def tls_verify(credentials: Credentials | None = None,
               ca_bundle: str | None = None) -> bool | str:
    """requests' `verify=` for the API: the credentials file's `verify_ssl` when it has one,
    else the system CA bundle when it exists, else True (certifi's bundle)."""
    if credentials is not None and credentials.verify_ssl is not None:
        return credentials.verify_ssl
    bundle = ca_bundle or os.environ.get("G5K_CA_BUNDLE") or SYSTEM_CA_BUNDLE
    return bundle if Path(bundle).is_file() else True


class Api:
    def __init__(self, base_url: str | None = None, credentials: Credentials | None = None,
                 dry_run: bool = False, say: Say | None = None, timeout_s: float = 30,
                 ca_bundle: str | None = None) -> None:
        uri = credentials.uri if credentials is not None else None
        self.base_url = (base_url or uri or DEFAULT_API_URL).rstrip("/")
        self.session = requests.Session()
        if credentials is not None and credentials.username and credentials.password:
            self.session.auth = (credentials.username, credentials.password)
        self.verify = tls_verify(credentials, ca_bundle)
        self.dry_run = dry_run
        self.say = say or (lambda _line: None)
        self.timeout_s = timeout_s
        self._told_unverified = False

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        shown = f"{method} {url}" + (f" {kwargs['json']}" if "json" in kwargs else "") + (
            f" params={kwargs['params']}" if "params" in kwargs else "")
        self.say(("[dry-run] " if self.dry_run else "") + shown)
        if self.dry_run:
            return None
        if self.verify is False and not self._told_unverified:
            self._told_unverified = True
            self.say(f"TLS certificate of {self.base_url} not verified (verify_ssl: false)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                response = self.session.request(method, url, timeout=self.timeout_s,
                                                verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise G5kError(_tls_problem(self.base_url, self.verify, exc)) from None
        except requests.RequestException as exc:
            raise G5kError(f"cannot reach the Grid'5000 API at {self.base_url} "
                           f"({type(exc).__name__}); from outside Grid'5000 check your "
                           "credentials and network, or set api_url") from None
        except OSError as exc:  # requests: a `verify` path that is no CA bundle
            raise G5kError(f"Grid'5000 API at {self.base_url}: CA bundle {self.verify} "
                           f"unusable ({exc.strerror or exc})") from None
        if response.status_code == 401:
            raise G5kError("Grid'5000 API: authentication failed (401): check "
                           "~/.python-grid5000.yaml or G5K_USER/G5K_PASSWORD")
        if response.status_code >= 400:
            raise G5kError(f"Grid'5000 API: {method} {path} refused ({response.status_code}): "
                           f"{_reason(response)}")
        return response.json() if response.content else None

    # OAR jobs
    def submit(self, spec: ClusterSpec, types: list[str] | None = None) -> int:
        """POST the job (`types`: default the spec's); its uid. Nothing is sent when the
        spec's types, queue or project are refused (see `g5k.config.job_problem`)."""
        if (problem := job_problem(spec)) is not None:
            raise G5kError(f"not submitted: {problem}")
        body: dict[str, Any] = {"resources": spec.resources, "command": "sleep infinity",
                                "name": "sweeper"}
        if spec.oar_properties:
            body["properties"] = spec.oar_properties
        types = spec.oar_types if types is None else types
        if types:
            body["types"] = types
        if spec.queue != "default":
            body["queue"] = spec.queue
        if spec.project:
            body["project"] = spec.project
        if spec.reservation:
            body["reservation"] = spec.reservation
        job = self._call("POST", f"/sites/{spec.site}/jobs", json=body)
        return 0 if job is None else int(job["uid"])

    def job(self, site: str, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/sites/{site}/jobs/{job_id}") or {
            "uid": job_id, "state": "running", "assigned_nodes": []}

    def wait_running(self, site: str, job_id: int, timeout_s: float = 3600,
                     poll_s: float = 5) -> list[str]:
        """The job's nodes once it runs; G5kError if it ends first, `JobWaitTimeout` (the
        job left as it is) if `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(site, job_id)
            state = job.get("state")
            if state == "running":
                return list(job.get("assigned_nodes", []))
            if state in FAILED_STATES:
                raise G5kError(f"OAR job {job_id} on {site} ended in state {state!r} before "
                               "running (no free nodes, or walltime over the policy?)")
            if time.monotonic() > deadline:
                raise JobWaitTimeout(site, job_id, job, timeout_s)
            time.sleep(poll_s)

    def delete(self, site: str, job_id: int) -> None:
        self._call("DELETE", f"/sites/{site}/jobs/{job_id}")

    def cluster_description(self, site: str, cluster: str) -> dict[str, Any]:
        """The reference API's cluster: {uid, exotic, queues, metrics, ...}
        (grid5000/reference-repository data/grid5000/sites/*/clusters/*/*.json)."""
        return self._call("GET", f"/sites/{site}/clusters/{cluster}") or {}

    # Reference API and Kwollect
    def cluster_metrics(self, site: str, cluster: str) -> list[dict[str, Any]]:
        """The cluster's Kwollect metric entries as the reference API gives them: {name,
        description, period (ms; 0: on demand only), optional_period, only_for (node uids;
        absent: every node), source, labels, ...}; see `g5k.kwollect.node_metric`."""
        described = self._call("GET", f"/sites/{site}/clusters/{cluster}") or {}
        return list(described.get("metrics", []))

    def metrics(self, site: str, nodes: list[str], metrics: list[str], start: datetime,
                end: datetime) -> list[dict[str, Any]]:
        params = {"nodes": ",".join(n.split(".")[0] for n in nodes),
                  "metrics": ",".join(metrics),
                  "start_time": start.isoformat(timespec="seconds"),
                  "end_time": end.isoformat(timespec="seconds")}
        return self._call("GET", f"/sites/{site}/metrics", params=params) or []


def _reason(response: requests.Response) -> str:
    """The refusal's text: g5k-api renders its errors as plain text (grid5000/g5k-api
    app/controllers/application_controller.rb `render_error`), some services as JSON."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:300]
    if isinstance(body, dict):
        body = body.get("message") or body.get("title") or body
    return " ".join(str(body).split())[:300]


def _tls_problem(base_url: str, verify: bool | str, exc: Exception) -> str:
    found = re.search(r"certificate verify failed: ([^()'\"]+)", str(exc))
    why = found.group(1).strip() if found else type(exc).__name__
    against = ("requests' default CA bundle (certifi)" if verify is True
               else f"the CA bundle {verify}")
    return (f"cannot verify the TLS certificate of the Grid'5000 API at {base_url} against "
            f"{against} ({why}): inside Grid'5000 it is signed by the Grid'5000 CA, which is "
            f"in the system bundle {SYSTEM_CA_BUNDLE}; give that bundle as verify_ssl in "
            "~/.python-grid5000.yaml, or as $G5K_CA_BUNDLE")
