"""Ray on the reserved nodes, started and stopped over SSH.

Each node runs `ray start --block` in its own session (`setsid`), with its own temp dir
`<ray_dir>/<job>-<index>` (node-local, short enough for Ray's socket paths). The pid of that
`ray start` is its process group, written next to its log. `stop` ends exactly that group:
the blocking `ray start` shuts its node's Ray processes down on SIGTERM (and Ray's reaper
and kernel fate-sharing take the rest), then the group is killed if anything is left.

Unlike `ray stop`, which ends every Ray process of the user on the machine, this leaves
any other Ray alone: on Grid'5000 the nodes are the job's, so both would do, but the same
code then runs safely against a shared machine (the tests start head + worker on loopback
beside the test session's own Ray). The per-node temp dir also keeps `ray start` from
writing `/tmp/ray/ray_current_cluster`, which a bare `ray.init()` elsewhere would join.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from g5k import G5kError
from g5k.config import ClusterSpec
from g5k.ssh import Remote

STARTED = "Ray runtime started"


@dataclass(frozen=True)
class RayNode:
    """One node's Ray: where it runs and the directory holding its temp dir, log and pid."""

    host: str
    directory: str
    head: bool

    @property
    def log(self) -> str:
        return f"{self.directory}/ray.log"

    @property
    def pidfile(self) -> str:
        return f"{self.directory}/ray.pid"

    @property
    def role(self) -> str:
        return "head" if self.head else "worker"


def ray_node(spec: ClusterSpec, job_id: int, index: int, host: str) -> RayNode:
    return RayNode(host, f"{spec.ray_dir}/{job_id}-{index}", head=index == 0)


def start_arguments(spec: ClusterSpec, node: RayNode, head_address: str) -> list[str]:
    """`ray start` options for one node (the head's ports come from the cluster file)."""
    args = ["start", "--block", f"--temp-dir={node.directory}", "--disable-usage-stats",
            # a random agent port: two nodes may share a machine (as in the tests)
            "--dashboard-agent-listen-port=0"]
    if spec.ray_cpus is not None:
        args.append(f"--num-cpus={spec.ray_cpus}")
    if node.head:
        return ["start", "--head", *args[1:], f"--port={spec.ray_port}",
                f"--ray-client-server-port={spec.ray_client_port}",
                f"--include-dashboard={'true' if spec.dashboard else 'false'}",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={spec.dashboard_port}"]
    return [*args, f"--address={head_address}"]


def start_command(spec: ClusterSpec, node: RayNode, head_address: str,
                  timeout_s: int = 120) -> str:
    """Launch `ray start --block` detached, then wait until it says it started or dies."""
    # the environment's path is left unquoted: `~/sweeper-venv` must expand on the node
    ray = f"{spec.python_env}/bin/ray " + shlex.join(start_arguments(spec, node, head_address))
    d, log, pid = (shlex.quote(x) for x in (node.directory, node.log, node.pidfile))
    return (f"mkdir -p {d}; setsid nohup {ray} > {log} 2>&1 < /dev/null & echo $! > {pid}; "
            f"for i in $(seq {timeout_s}); do grep -q '{STARTED}' {log} && exit 0; "
            f"kill -0 $(cat {pid}) 2>/dev/null || {{ tail -n 5 {log} >&2; exit 1; }}; "
            f"sleep 1; done; echo 'no \"{STARTED}\" in {timeout_s} s' >&2; exit 1")


def stop_command(node: RayNode, grace_s: int = 30) -> str:
    """End the process group of this node's `ray start` (checked by its temp dir, so a
    recycled pid is never hit); exit 3 when there is no pid file."""
    d, pid = shlex.quote(node.directory), shlex.quote(node.pidfile)
    return (f"p=$(cat {pid} 2>/dev/null) || exit 3; "
            f"tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -qF -- --temp-dir={d} "
            "|| exit 0; kill -TERM $p; "
            f"for i in $(seq {grace_s * 2}); do kill -0 -- -$p 2>/dev/null || exit 0; "
            "sleep 0.5; done; kill -KILL -- -$p")


def count_nodes_command(spec: ClusterSpec, address: str, expected: int,
                        timeout_s: int = 120) -> str:
    """On the head: wait until `expected` nodes are alive in Ray; print how many are."""
    # one line, so that --dry-run shows one line per command
    script = (f"import time, ray; ray.init(address={address!r}, log_to_driver=False, "
              f"logging_level='ERROR'); end = time.time() + {timeout_s}; "
              "alive = lambda: sum(n['Alive'] for n in ray.nodes()); "
              f"print(next(a for a in iter(alive, None) if a >= {expected} "
              "or time.time() > end or time.sleep(1)))")
    return f"{spec.python_env}/bin/python -c {shlex.quote(script)}"


def start(spec: ClusterSpec, remote: Remote, node: RayNode, head_address: str) -> None:
    code, _, err = remote.execute(start_command(spec, node, head_address))
    if code != 0:
        lines = err.strip().splitlines()
        raise G5kError(f"Ray {node.role} on {node.host} did not start: "
                       f"{lines[-1] if lines else 'no message'} (log: {node.log} on "
                       f"{node.host}); fix that and run `sweeper cluster up` again")


def wait_alive(spec: ClusterSpec, head: Remote, address: str, expected: int) -> None:
    code, out, err = head.execute(count_nodes_command(spec, address, expected))
    if head.dry_run:
        return
    alive = out.strip().splitlines()[-1] if out.strip() else "?"
    if code != 0 or alive != str(expected):
        reason = err.strip().splitlines()[-1] if code != 0 and err.strip() else \
            f"{alive} of {expected} nodes alive"
        raise G5kError(f"Ray is not up at {address}: {reason}; see the ray.log files under "
                       f"{spec.ray_dir} on the nodes, then `sweeper cluster up` again")


def stop(remote: Remote, node: RayNode) -> str | None:
    """Stop one node's Ray; None, or why it could not be checked."""
    code, _, err = remote.execute(stop_command(node))
    if code == 3:
        return (f"no Ray pid file {node.pidfile} on {node.host}: if Ray runs there, "
                f"`ray stop` on {node.host} ends it")
    if code != 0:
        return f"stopping Ray on {node.host} failed ({err.strip() or f'exit code {code}'})"
    return None
