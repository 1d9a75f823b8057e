"""Child processes that cannot outlive the trial: each in its own process group (so its
own children, e.g. the `flwr-clientapp` a SuperNode spawns, go with it), killed by the
kernel if the trial's process dies (PR_SET_PDEATHSIG), and killed group-wise on close."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls into it


def die_with_parent(name: str | None = None) -> None:
    """Run in a child (between fork and exec, or in a fork that stays): SIGKILL when the
    parent goes, and, if given, be called `name` (<= 15 bytes) in `ps` and /proc/PID/comm.
    The signal comes when the *thread* that started the child ends, so processes are
    started from the thread running the trial."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if name is not None:
        _LIBC.prctl(_PR_SET_NAME, name.encode()[:15])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listening(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds a TCP socket listening on `port` (a connection
    test could reach another process that took the port first)."""
    try:
        inodes = {os.readlink(fd)[len("socket:["):-1] for fd in Path(f"/proc/{pid}/fd").iterdir()
                  if os.readlink(fd).startswith("socket:[")}
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if (fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
                        and fields[9] in inodes):
                    return True
    return False


def wait_listening(proc: subprocess.Popen, port: int, timeout_s: float) -> bool:
    """True once `proc` listens on `port`; False if it exits first or on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if listening(proc.pid, port):
            return True
        time.sleep(0.05)
    return False


class Processes:
    """The processes of one trial; `close()` kills every group, waits for it, and is safe to
    call twice."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=die_with_parent)
        log.close()
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 3) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])

    def exited(self) -> str | None:
        """The first process that has exited, how, and the end of its log; or None."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                how = (f"killed by {signal.Signals(-code).name}" if code < 0
                       else f"exited with code {code}")
                tail = self.log_tail(name, 1)
                return f"{name} {how}" + (f" ({tail})" if tail and code > 0 else "")
        return None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def discard(self, name: str) -> None:
        """Kill a process's group and forget it (e.g. a start that failed, to be retried)."""
        self.kill(name)
        self.procs.pop(name).wait()

    def close(self, grace_s: float = 2.0) -> None:
        for name in self.procs:
            self.kill(name, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for name, proc in self.procs.items():
            self.kill(name)  # the group, even if its leader already exited
            proc.wait()
