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

Every process of the cluster runs with Ray's token authentication (Ray >= 2.52,
`RAY_AUTH_MODE=token`): the GCS and the client server listen on the node's network, and
without a token anyone reaching them runs code as the user. Ray 2.55 takes the token from
`RAY_AUTH_TOKEN` (not used here: it would sit in every process's environment), else from the
file `RAY_AUTH_TOKEN_PATH` names, else from `~/.ray/auth_token` (Ray's C++
AuthenticationTokenLoader). Here it is a file of its own, `~/.sweeper/ray-token-<name>`, made
fresh by `cluster up`, mode 0600; the nodes get its path only, through the environment, so the
token is never on a command line. The frontend and the nodes of a Grid'5000 site mount the
same NFS home: one file, written once through the frontend, serves every node.
"""

from __future__ import annotations

import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from g5k import G5kError
from g5k.config import ClusterSpec, shell_path
from g5k.ssh import Remote

STARTED = "Ray runtime started"
TOKEN_DIR = ".sweeper"  # in the home


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


def home_token(name: str) -> str:
    """The token file `name` in the home, as a word the remote shell expands."""
    return f'"$HOME"/{TOKEN_DIR}/{shlex.quote(name)}'


def token_env(token: str) -> str:
    """Shell assignments making a Ray process (server or client) use the token in the file
    `token` (a shell word): its path, never the token itself."""
    return f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token}"


def new_token(path: Path) -> None:
    """A fresh token in `path`, created 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.new")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    os.replace(temp, path)


def client_env(path: Path) -> dict[str, str]:
    """The environment a Ray client needs to be let in with the token in `path`; a token
    file others may read or write is refused."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        raise G5kError(f"no Ray token {path}: `sweeper cluster up` writes it") from None
    if mode & 0o077:
        raise G5kError(f"{path}: mode {mode:o}, open to group or others: Ray token refused "
                       f"(chmod 600 {path}, or `sweeper cluster up` again for a new one)")
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def copy_token(remote: Remote, path: Path, name: str) -> None:
    """Write the token in `path` to `home_token(name)` on `remote`, sent on the command's
    standard input; created under umask 077 and renamed into place."""
    token = home_token(name)
    new = f"{token}.new"
    command = (f'umask 077 && mkdir -p "$HOME"/{TOKEN_DIR} && rm -f {new} && cat > {new} && '
               f"mv -f {new} {token}")
    remote.say(("[dry-run] " if remote.dry_run else "") + f"ssh {remote.label}: {command} "
               f"< {path}")
    if remote.dry_run:
        return
    stdin, stdout, stderr = remote.client().exec_command(command, timeout=60)
    stdin.write(path.read_text())
    stdin.channel.shutdown_write()
    err = stderr.read().decode().strip().splitlines()
    stdout.read()
    if stdout.channel.recv_exit_status() != 0:
        raise G5kError(f"could not write the Ray token {token} on {remote.host}: "
                       f"{err[-1] if err else 'no message'}")


def remove_token(remote: Remote, name: str) -> str | None:
    """Delete the cluster's token on `remote`; None, or why not."""
    code, _, err = remote.execute(f"rm -f {home_token(name)}")
    return None if code == 0 else (f"removing the Ray token {TOKEN_DIR}/{name} on "
                                    f"{remote.host} failed ({err.strip() or code})")


def start_command(spec: ClusterSpec, node: RayNode, head_address: str, token: str,
                  timeout_s: int = 120) -> str:
    """Launch `ray start --block` detached with the token file `token` (a shell word), then
    wait until it says it started or dies. A token file others may read is refused."""
    # quoted, but a leading ~/ left to the node's shell: `~/sweeper-venv` expands there
    ray = (f"{shell_path(spec.python_env)}/bin/ray "
           + shlex.join(start_arguments(spec, node, head_address)))
    d, log, pid = (shlex.quote(x) for x in (node.directory, node.log, node.pidfile))
    env = token_env('"$t"')
    return (f"t={token}; m=$(stat -c %a \"$t\") || exit 1; case $m in ?00) ;; *) "
            'echo "$t: mode $m, open to group or others: Ray token refused (chmod 600 $t)" '
            ">&2; exit 1;; esac; "
            f"mkdir -p {d}; {env} setsid nohup {ray} > {log} 2>&1 < /dev/null & "
            f"echo $! > {pid}; "
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


def count_nodes_command(spec: ClusterSpec, address: str, expected: int, token: str,
                        timeout_s: int = 120) -> str:
    """On the head: wait until `expected` nodes are alive in Ray; print how many are."""
    # one line, so that --dry-run shows one line per command
    script = (f"import time, ray; ray.init(address={address!r}, log_to_driver=False, "
              f"logging_level='ERROR'); end = time.time() + {timeout_s}; "
              "alive = lambda: sum(n['Alive'] for n in ray.nodes()); "
              f"print(next(a for a in iter(alive, None) if a >= {expected} "
              "or time.time() > end or time.sleep(1)))")
    return (f"{token_env(token)} {shell_path(spec.python_env)}/bin/python -c "
            f"{shlex.quote(script)}")


def start(spec: ClusterSpec, remote: Remote, node: RayNode, head_address: str,
          token: str) -> None:
    code, _, err = remote.execute(start_command(spec, node, head_address, token))
    if code != 0:
        lines = err.strip().splitlines()
        raise G5kError(f"Ray {node.role} on {node.host} did not start: "
                       f"{lines[-1] if lines else 'no message'} (log: {node.log} on "
                       f"{node.host}); fix that and run `sweeper cluster up` again")


def wait_alive(spec: ClusterSpec, head: Remote, address: str, expected: int,
               token: str) -> None:
    code, out, err = head.execute(count_nodes_command(spec, address, expected, token))
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
