"""The Grid'5000 REST API: OAR jobs, the reference API and Kwollect metrics.

Every call goes through `_call`, which in dry-run mode only reports what it would send.
Credentials travel in the HTTP auth header only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests

from g5k import G5kError
from g5k.config import ClusterSpec
from g5k.credentials import Credentials

Say = Callable[[str], None]
FAILED_STATES = ("error", "terminated", "tolaunch_error")


class Api:
    def __init__(self, base_url: str, credentials: Credentials | None = None,
                 dry_run: bool = False, say: Say | None = None, timeout_s: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        if credentials is not None:
            self.session.auth = (credentials.username, credentials.password)
        self.dry_run = dry_run
        self.say = say or (lambda _line: None)
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        shown = f"{method} {url}" + (f" {kwargs['json']}" if "json" in kwargs else "") + (
            f" params={kwargs['params']}" if "params" in kwargs else "")
        self.say(("[dry-run] " if self.dry_run else "") + shown)
        if self.dry_run:
            return None
        try:
            response = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise G5kError(f"cannot reach the Grid'5000 API at {self.base_url} "
                           f"({type(exc).__name__}); from outside Grid'5000 check your "
                           "credentials and network, or set api_url") from None
        if response.status_code == 401:
            raise G5kError("Grid'5000 API: authentication failed (401): check "
                           "~/.python-grid5000.yaml or G5K_USER/G5K_PASSWORD")
        if response.status_code >= 400:
            raise G5kError(f"Grid'5000 API: {method} {path} refused ({response.status_code}): "
                           f"{_reason(response)}")
        return response.json() if response.content else None

    # OAR jobs
    def submit(self, spec: ClusterSpec) -> int:
        body: dict[str, Any] = {"resources": spec.resources, "command": "sleep infinity",
                                "name": "sweeper"}
        if spec.oar_properties:
            body["properties"] = spec.oar_properties
        if spec.job_type != "default":
            body["types"] = [spec.job_type]
        if spec.reservation:
            body["reservation"] = spec.reservation
        job = self._call("POST", f"/sites/{spec.site}/jobs", json=body)
        return 0 if job is None else int(job["uid"])

    def job(self, site: str, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/sites/{site}/jobs/{job_id}") or {
            "uid": job_id, "state": "running", "assigned_nodes": []}

    def wait_running(self, site: str, job_id: int, timeout_s: float = 3600,
                     poll_s: float = 5) -> list[str]:
        """The job's nodes once it runs; an error if it fails or `timeout_s` passes."""
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
                raise G5kError(f"OAR job {job_id} on {site} still {state!r} after "
                               f"{timeout_s:.0f} s: no free nodes yet; keep it, or `down`")
            time.sleep(poll_s)

    def delete(self, site: str, job_id: int) -> None:
        self._call("DELETE", f"/sites/{site}/jobs/{job_id}")

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
    try:
        body = response.json()
        return str(body.get("message") or body.get("title") or body)[:300]
    except ValueError:
        return response.text[:300]
