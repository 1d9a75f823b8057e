"""Stand-ins for what cannot be reached from here: an HTTP(S) server answering like the
Grid'5000 REST API (OAR jobs, reference API, Kwollect), and real OpenSSH servers on
loopback with OAR commands (`oarsub`, `oarstat`, `oardel`) on their PATH."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import paramiko
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


# A site's OAR queues (oar-team/oar sources/core/database/default_data.sql: admin, default,
# besteffort; Grid'5000 adds production with its other name abaca, and testing).
SITE_QUEUES = ("admin", "default", "production", "abaca", "besteffort", "testing")
# OAR 2.5's job states as the API gives them, lower-cased (grid5000/g5k-api lib/oar/job.rb).
JOB_STATES = ("waiting", "hold", "tolaunch", "toerror", "toackreservation", "launching",
              "running", "suspended", "resuming", "finishing", "terminated", "error")


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA of its own and a server certificate it signs for 127.0.0.1, as PEM files
    (ca.pem, server.pem, server.key): the stand-in's HTTPS, the way the Grid'5000 CA signs
    the API's certificate inside Grid'5000."""
    now = datetime.now(UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       issuer_key.public_key()), critical=False))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = (builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False))
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_name = "Stand-in Grid'5000 CA"
    ca = certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    server = certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


class FakeG5kApi:
    """Jobs go through `states`, one per GET of the job, and stay in the last one (default:
    waiting for `polls_before_running` GETs, then running). A cluster's metrics are
    `clusters[uid]`, or DEFAULT_METRICS; the clusters in `exotic` are `exotic: true`.

    Jobs are submitted, read and deleted in grid5000/g5k-api's shapes: POST answers 201 and
    the job, DELETE 202 and no body (app/controllers/jobs_controller.rb), a job reads
    {uid, user, walltime, queue, state, project, name, types, command, submitted_at,
    scheduled_at, started_at, properties, assigned_nodes, ...} (lib/oar/job.rb), refusals
    are plain text (application_controller.rb `render_error`). As OAR does, an unknown queue
    is refused (oar-team/oar OAR/IO.pm: "queue '...' does not exist"), and so is a job on an
    exotic cluster without the exotic type (Grid'5000's rule; the wording is the
    stand-in's). `open_access`: requests without credentials are served, as from inside
    Grid'5000. `tls`: HTTPS under a CA of its own, `ca_path`."""

    def __init__(self, nodes: list[str], samples: list[dict], polls_before_running: int = 2,
                 clusters: dict[str, list[dict]] | None = None, *,
                 states: list[str] | None = None, exotic: tuple[str, ...] = (),
                 open_access: bool = False, tls: bool = False):
        self.nodes, self.samples = nodes, samples
        self.clusters = clusters or {}
        self.polls_before_running = polls_before_running
        self.states = states or ["waiting"] * polls_before_running + ["running"]
        assert all(state in JOB_STATES for state in self.states), self.states
        self.exotic, self.open_access = set(exotic), open_access
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

            def _refuse(self, code: int, text: str):
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                header = self.headers.get("Authorization", "")
                api.headers_seen.append(header)
                return header == f"Basic {expected}" or (api.open_access and not header)

            def _submit(self, site: str, body: dict):
                queue, types = body.get("queue", "default"), list(body.get("types", []))
                if queue not in SITE_QUEUES:
                    return self._refuse(400, f"Request to {site}/oarapi/jobs.json failed with "
                                             f"status 400: # Error: queue '{queue}' does not "
                                             "exist")
                wanted = re.findall(r"cluster='([^']+)'", body.get("properties", ""))
                if any(c in api.exotic for c in wanted) and "exotic" not in types:
                    return self._refuse(400, f"Request to {site}/oarapi/jobs.json failed with "
                                             "status 400: [ADMISSION RULE] an exotic cluster "
                                             "needs the exotic job type (-t exotic)")
                uid = 4242 + len(api.jobs)
                start = int(time.time()) + 3600  # OAR's prediction, or the reservation's
                if body.get("reservation"):
                    start = int(datetime.fromisoformat(body["reservation"]).replace(
                        tzinfo=UTC).timestamp())
                api.jobs[uid] = {
                    "uid": uid, "user": USER, "user_uid": USER, "walltime": 3600,
                    "queue": queue, "state": "waiting", "project": body.get("project",
                                                                            "default"),
                    "name": body.get("name"), "types": types, "mode": "PASSIVE",
                    "command": body.get("command"), "submitted_at": int(time.time()),
                    "scheduled_at": start, "started_at": 0,
                    "message": "", "properties": body.get("properties", ""),
                    "directory": f"/home/{USER}", "events": [], "polls": 0}
                return self._reply(201, api.job_view(uid))

            def _handle(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                url = urlparse(self.path)
                api.requests.append((method, self.path, body))
                if not self._authorized():
                    return self._reply(401, {"message": "Unauthorized"})
                parts = url.path.strip("/").split("/")  # stable/sites/<site>/...
                if len(parts) == 3 and method == "GET":
                    return self._reply(200, {"uid": parts[2], "type": "site"})
                if parts[3:] == ["jobs"] and method == "POST":
                    return self._submit(parts[2], body or {})
                if parts[3] == "jobs" and len(parts) == 5:
                    job = api.jobs.get(int(parts[4]))
                    if job is None:
                        return self._refuse(404, f"Couldn't find OAR::Job with 'job_id'="
                                                 f"{parts[4]}")
                    if method == "DELETE":
                        job["state"] = "terminated"
                        return self._reply(202)
                    job["polls"] += 1
                    if job["state"] != "terminated":
                        job["state"] = api.states[min(job["polls"], len(api.states)) - 1]
                    return self._reply(200, api.job_view(job["uid"]))
                if parts[3] == "clusters":
                    return self._reply(200, {
                        "uid": parts[4], "exotic": parts[4] in api.exotic,
                        "queues": ["admin", "default"], "type": "cluster",
                        "metrics": api.clusters.get(parts[4], DEFAULT_METRICS)})
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
        self.ca_path: Path | None = None
        self._tls_dir: tempfile.TemporaryDirectory | None = None
        if tls:
            self._tls_dir = tempfile.TemporaryDirectory(prefix="g5k-tls-")
            self.ca_path, cert, key = make_tls_files(Path(self._tls_dir.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/stable"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def job_view(self, uid: int) -> dict:
        """The job as the API shows it: nodes once running, a predicted start before."""
        job = {k: v for k, v in self.jobs[uid].items() if k != "polls"}
        running = job["state"] == "running"
        job["assigned_nodes"] = self.nodes if running else []
        job["resources_by_type"] = {"cores": [f"{n}/0" for n in self.nodes]} if running else {}
        if running:
            job["started_at"], job["scheduled_at"] = job["submitted_at"], None
        return job

    @property
    def posted(self) -> list[dict]:
        return [body for method, _, body in self.requests if method == "POST"]

    @property
    def deleted(self) -> list[str]:
        return [path for method, path, _ in self.requests if method == "DELETE"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._tls_dir is not None:
            self._tls_dir.cleanup()


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
