"""Stand-ins for what cannot be reached from here: an HTTP server answering like the
Grid'5000 REST API (OAR jobs, reference API, Kwollect), and real OpenSSH servers on
loopback with OAR commands (`oarsub`, `oarstat`, `oardel`) on their PATH."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import textwrap
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import paramiko

USER, PASSWORD = "alice", "s3cret-pw"


# What the reference API lists for a cluster without an entry in `clusters`: every node
# with a wattmetre and a BMC.
DEFAULT_METRICS = [
    {"name": "bmc_node_power_watt", "description": "Power consumption of node reported by "
     "BMC, in watt", "period": 5000, "source": {"protocol": "snmp"}},
    {"name": "wattmetre_power_watt", "description": "Power consumption of node reported by "
     "wattmetre, in watt", "period": 1000, "optional_period": 20,
     "source": {"protocol": "wattmetre"}}]

# Clusters' `metrics` entries in the reference API's shape (GET /sites/{site}/clusters/{uid},
# as in grid5000/reference-repository data/grid5000/sites/*/clusters/*/*.json), power ones:
# gros as on Nancy (wattmetre only_for gros-41..76, PDU outlet and BMC for all, a BMC
# counter collected on demand only); parasilo as on Rennes (PDU outlet only_for part of the
# nodes); grdix as on Nancy (its BMC power on demand only: period 0).
REFERENCE_CLUSTERS = {
    "gros": [
        {"name": "wattmetre_power_watt", "description": "Power consumption of node reported "
         "by wattmetre, in watt", "period": 1000, "optional_period": 20,
         "only_for": [f"gros-{i}" for i in range(41, 77)], "source": {"protocol": "wattmetre"}},
        {"name": "pdu_outlet_power_watt", "description": "Power consumption of node reported "
         "by PDU, in watt", "period": 1000, "source": {"protocol": "pdu"}},
        {"name": "bmc_node_power_watt", "description": "Power consumption of node reported by "
         "BMC, in watt", "period": 5000, "source": {"protocol": "snmp", "id": "1.3.6.1.4.1."
                                                     "674.10892.5.4.600.30.1.6.1.3"}},
        {"name": "bmc_node_power_watthour_total", "description": "Cumulated power consumption "
         "of node reported by BMC, in watt-hour", "period": 0, "optional_period": 5000,
         "source": {"protocol": "snmp", "id": "1.3.6.1.4.1.674.10892.5.4.600.60.1.7.1.1"}}],
    "parasilo": [
        {"name": "pdu_outlet_power_watt", "description": "Power consumption of node reported "
         "by PDU, in watt", "period": 1000,
         "only_for": [f"parasilo-{i}" for i in range(1, 22)], "source": {"protocol": "pdu"}},
        {"name": "bmc_node_power_watt", "description": "Power consumption of node reported by "
         "BMC, in watt", "period": 5000, "source": {"protocol": "snmp"}}],
    "grdix": [
        {"name": "bmc_node_power_watt", "description": "Power consumption reported by BMC, in "
         "watt", "period": 0, "optional_period": 5000,
         "source": {"protocol": "ipmisensor", "id": 54}}],
}


class FakeG5kApi:
    """Jobs go waiting -> running after `polls_before_running` GETs. A cluster's metrics are
    `clusters[uid]`, or DEFAULT_METRICS."""

    def __init__(self, nodes: list[str], samples: list[dict], polls_before_running: int = 2,
                 clusters: dict[str, list[dict]] | None = None):
        self.nodes, self.samples = nodes, samples
        self.clusters = clusters or {}
        self.polls_before_running = polls_before_running
        self.requests: list[tuple[str, str, dict | None]] = []
        self.jobs: dict[int, dict] = {}
        self.headers_seen: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                header = self.headers.get("Authorization", "")
                api.headers_seen.append(header)
                return header == f"Basic {expected}"

            def _handle(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                url = urlparse(self.path)
                api.requests.append((method, self.path, body))
                if not self._authorized():
                    return self._reply(401, {"message": "Unauthorized"})
                parts = url.path.strip("/").split("/")  # stable/sites/<site>/...
                if parts[3:] == ["jobs"] and method == "POST":
                    uid = 4242 + len(api.jobs)
                    api.jobs[uid] = {"uid": uid, "state": "waiting", "polls": 0}
                    return self._reply(201, {"uid": uid, "state": "waiting"})
                if parts[3] == "jobs" and len(parts) == 5:
                    job = api.jobs[int(parts[4])]
                    if method == "DELETE":
                        job["state"] = "terminated"
                        return self._reply(202, {"uid": job["uid"], "status": "deleted"})
                    job["polls"] += 1
                    if job["state"] == "waiting" and job["polls"] > api.polls_before_running:
                        job["state"] = "running"
                    nodes = api.nodes if job["state"] == "running" else []
                    return self._reply(200, {"uid": job["uid"], "state": job["state"],
                                             "assigned_nodes": nodes})
                if parts[3] == "clusters":
                    return self._reply(200, {"uid": parts[4], "metrics": api.clusters.get(
                        parts[4], DEFAULT_METRICS)})
                if parts[3] == "metrics":  # like Kwollect: by metric, node and time
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    wanted, nodes = query["metrics"].split(","), query["nodes"].split(",")
                    start, end = (datetime.fromisoformat(query[k])
                                  for k in ("start_time", "end_time"))
                    return self._reply(200, [
                        s for s in api.samples if s["metric_id"] in wanted
                        and s["device_id"] in nodes
                        and start <= datetime.fromisoformat(s["timestamp"]) <= end])
                return self._reply(404, {"message": "not found"})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stable"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


OAR_STUBS = {
    "oarsub": """#!/bin/sh
echo "$@" >> "$OAR_LOG"
echo "[ADMISSION RULE] Modify resource description with type constraints"
echo "OAR_JOB_ID=777"
""",
    "oarstat": """#!/bin/sh
echo "oarstat $@" >> "$OAR_LOG"
n=$(cat "$OAR_STATE.polls" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$OAR_STATE.polls"
if [ $n -lt 2 ]; then state=Waiting; nodes='[]'; else state=Running
  nodes="[$(echo "${OAR_NODES:-127.0.0.1}" | sed 's/[^,][^,]*/"&"/g')]"; fi
echo "{\\"777\\": {\\"state\\": \\"$state\\", \\"assigned_network_address\\": $nodes}}"
""",
    "oardel": """#!/bin/sh
echo "oardel $@" >> "$OAR_LOG"
echo "Deleting the job = 777 ...REGISTERED."
""",
}


# Grid'5000's `sudo-g5k` runs a command as root; this one records what it was asked
# (and, for `tee`, what it was given to write).
SUDO_G5K_STUB = """#!/bin/sh
echo "sudo-g5k $@" >> "$SUDO_LOG"
[ "$1" = tee ] && sed 's/^/  stdin: /' >> "$SUDO_LOG"
exit 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A real OpenSSH server on loopback (127.0.0.1 and 127.0.0.2: two "nodes" on one
    machine), key authentication only."""

    def __init__(self, root: Path, authorized_key: str, env: dict[str, str]):
        root.mkdir(parents=True)
        self.port = free_port()
        host_key = root / "host_key"
        paramiko.RSAKey.generate(2048).write_private_key_file(str(host_key))
        (root / "authorized_keys").write_text(authorized_key + "\n")
        set_env = " ".join(f"{k}={v}" for k, v in env.items())
        (root / "sshd_config").write_text(textwrap.dedent(f"""
            Port {self.port}
            ListenAddress 127.0.0.1
            ListenAddress 127.0.0.2
            HostKey {host_key}
            AuthorizedKeysFile {root / "authorized_keys"}
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin yes
            StrictModes no
            UsePAM no
            AllowTcpForwarding yes
            PidFile {root / "sshd.pid"}
            SetEnv {set_env}
        """))
        Path("/run/sshd").mkdir(exist_ok=True)
        with open(root / "sshd.log", "w") as log:
            self.process = subprocess.Popen(
                [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f",
                 str(root / "sshd_config")], stderr=log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError((root / "sshd.log").read_text())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
