"""Doorbells: a federation's processes on one machine wake each other instead of polling.

Flower's deployment runtime is pull-based: a SuperNode asks the SuperLink for messages, a
SuperExec asks its SuperNode for tasks, the ServerApp asks the SuperLink for replies. Polled
often, those requests were most of a deployment trial's CPU time (each costs the SuperLink
milliseconds of Python); polled seldom, every hop waits. Here whoever makes work for
another process rings that process's bell after the work is stored:

- the ServerApp, after pushing messages, rings every SuperNode (`node-*`);
- a SuperNode, after pulling a message, rings its SuperExec (`exec-client-<partition>`),
  and after pushing its reply, the ServerApp (`server`);
- the trial, after starting a run, rings the SuperLink's SuperExec (`exec-server`).

A bell is a Unix datagram socket in the federation's own folder (`BELLS_ENV`; no port,
reachable only through the folder's permissions, and across network namespaces since it is
a path). A ring that comes before the wait is queued, so none is lost. A process whose
bell cannot be made (no folder: a SuperNode on another machine) keeps polling; one that has
a bell still looks now and then (`PATIENCE_S`), in case a ringer is on another machine.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from pathlib import Path
from types import SimpleNamespace

BELLS_ENV = "SWEEPER_BELLS"  # the folder of the federation's bells (absent: everyone polls)
BELLS = "bells"  # that folder, in the federation's home
SUFFIX = ".bell"
MAX_PATH = 100  # sockaddr_un holds 108 bytes
PATIENCE_S = 3.0  # the longest a process with a bell waits before it looks (Flower's own idle wait)


def bells_folder(home: Path) -> Path | None:
    """The folder for a federation at `home`, made; None where its paths would be too long
    for a Unix socket (the processes then poll)."""
    folder = home / BELLS
    if len(str(folder / f"exec-client-00000{SUFFIX}")) > MAX_PATH:
        return None
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


class Doorbell:
    """This process's bell, `name` in the federation's folder; without one, `wait` sleeps
    and `idle` polls every `fastest_s` after work, backing off to `slowest_s`."""

    def __init__(self, name: str, fastest_s: float = 0.02, slowest_s: float = 0.5) -> None:
        self.fastest_s, self.slowest_s = fastest_s, slowest_s
        self.poll_s = fastest_s
        self.socket: socket.socket | None = None
        folder = os.environ.get(BELLS_ENV)
        if not folder or not Path(folder).is_dir():
            return
        path = Path(folder) / f"{name}{SUFFIX}"
        bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a bell left by an earlier process of that name
            bell.bind(str(path))
            bell.setblocking(False)
        except OSError:
            bell.close()
            return
        self.socket = bell

    @property
    def works(self) -> bool:
        return self.socket is not None

    def worked(self) -> None:
        """There was work: without a bell, look again soon."""
        self.poll_s = self.fastest_s

    def idle(self) -> None:
        """Nothing to do: wait for a ring (looking anyway after `PATIENCE_S`); without a
        bell, sleep the poll interval, then lengthen it by half up to `slowest_s`."""
        if self.works:
            self.wait(PATIENCE_S)
            return
        time.sleep(self.poll_s)
        self.poll_s = min(self.poll_s * 1.5, self.slowest_s)

    def wait(self, timeout_s: float) -> bool:
        """Until rung or `timeout_s` passed; True if rung (all queued rings are taken)."""
        if self.socket is None:
            time.sleep(timeout_s)
            return False
        ready, _, _ = select.select([self.socket], [], [], timeout_s)
        rung = False
        while ready:
            try:
                self.socket.recv(16)
                rung = True
            except BlockingIOError:
                break
        return rung


def ring(pattern: str, folder: str | Path | None = None) -> None:
    """Ring every bell named like `pattern` (a glob) in `folder` (by default this process's
    federation's); silent where there is none (a process without a bell polls)."""
    folder = folder or os.environ.get(BELLS_ENV)
    if not folder:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in Path(folder).glob(f"{pattern}{SUFFIX}"):
            # gone, not yet bound, or its queue full (it has rings to wake up to anyway)
            with contextlib.suppress(OSError):
                sender.sendto(b"!", str(path))


def clock_sleeping_with(sleep) -> SimpleNamespace:
    """The `time` module with `sleep` in place of its own: given to a Flower module that
    sleeps, so that its waits can be cut short or woken."""
    clock = {name: getattr(time, name) for name in dir(time) if not name.startswith("__")}
    return SimpleNamespace(**{**clock, "sleep": sleep})
