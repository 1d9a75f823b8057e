"""`sweeper ui`: the MLflow UI and optuna-dashboard on one store, both on 127.0.0.1.

Why a command rather than two lines in the README: each UI needs the store's exact URIs
(the SQLite files; the artifact folder MLflow serves `mlflow-artifacts:` locations from,
see artifact_store.py), neither has authentication (so loopback only, on free ports), and
both must stop together, leaving nothing behind. Each server starts workers of its own, so
each runs in a process group of its own that is killed whole; both die with this process
(PR_SET_PDEATHSIG) if it is killed outright.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path

from sweeper.engines.deployment.processes import die_with_parent, free_port
from sweeper.errors import StoreError, SweeperError

HOST = "127.0.0.1"
START_TIMEOUT_S = 120  # MLflow's server imports for ~10 s on a loaded 2-core machine


def command(args: argparse.Namespace) -> int:
    """`sweeper ui [--store DIR]`."""
    return serve(args.store)


def check_store(store: Path) -> None:
    """A store holding at least one sweep (both databases), else one line naming it."""
    if not Path(store).is_dir():
        raise StoreError(f"{store}: no such folder (a store is the --store of `sweeper pareto`)")
    absent = [name for name in ("mlflow.db", "optuna.db") if not (Path(store) / name).is_file()]
    if absent:
        raise StoreError(f"{store}: no sweeps in this folder (no {' or '.join(absent)})")
    db = (Path(store) / "optuna.db").resolve()
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
            studies = conn.execute("SELECT count(*) FROM studies").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"{db}: not readable as an Optuna store ({exc})") from None
    if not studies:
        raise StoreError(f"{store}: no sweeps in this store ({db} holds no study)")


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log: Path


@dataclass
class Servers:
    """The two UIs of one store; `stop()` kills both process groups (safe to call twice)."""

    mlflow: Server
    optuna: Server
    logs: tempfile.TemporaryDirectory = field(repr=False)

    def all(self) -> list[Server]:
        return [self.mlflow, self.optuna]

    def exited(self) -> str | None:
        """The first server that has exited, with the end of its log; or None."""
        for server in self.all():
            code = server.process.poll()
            if code is not None:
                return f"{server.name} exited with code {code}: {_tail(server.log)}"
        return None

    def stop(self, grace_s: float = 5.0) -> None:
        for server in self.all():
            _signal_group(server.process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for server in self.all():
            with suppress(subprocess.TimeoutExpired):
                server.process.wait(max(0.0, deadline - time.monotonic()))
        for server in self.all():  # the group, even if its leader already exited
            _signal_group(server.process, signal.SIGKILL)
            server.process.wait()
        self.logs.cleanup()


def start(store: Path, timeout_s: float = START_TIMEOUT_S,
          stop: threading.Event | None = None) -> Servers:
    """Start both UIs on `store` (checked first) and wait until both listen (or `stop`
    is set: then both are stopped and KeyboardInterrupt raised)."""
    check_store(store)
    folder = Path(store).resolve()
    logs = tempfile.TemporaryDirectory(prefix="sweeper-ui-")
    mlflow_port, optuna_port = free_port(HOST), free_port(HOST)
    # MLflow 3's server also starts a job runner and ~7 consumers for its GenAI jobs
    # (judges, prompt optimization): none are used here, and they took a minute to start
    mlflow = _launch("MLflow UI", mlflow_port, Path(logs.name) / "mlflow.log", [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts"),
        "--host", HOST, "--port", str(mlflow_port), "--workers", "1"],
        {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    optuna = _launch("optuna-dashboard", optuna_port, Path(logs.name) / "optuna.log", [
        _optuna_dashboard(), f"sqlite:///{folder / 'optuna.db'}",
        "--host", HOST, "--port", str(optuna_port)])
    servers = Servers(mlflow, optuna, logs)
    try:
        for server in servers.all():
            _wait_listening(server, servers, timeout_s, stop or threading.Event())
    except BaseException:
        servers.stop()
        raise
    return servers


def _sweep_pages(store: Path, base: str) -> list[tuple[str, str]]:
    """Each sweep's page of runs, in MLflow's model-training view (a bare URL opens on its
    GenAI view)."""
    from sweeper.tracking import SHARED_EXPERIMENT, Tracker, ui_url

    client = Tracker(store).client
    return [(e.name, ui_url(base, e.experiment_id))
            for e in client.search_experiments(max_results=1000)
            if e.name not in ("Default", SHARED_EXPERIMENT)]


def serve(store: Path, say: Callable[[str], None] = print) -> int:
    """`sweeper ui`: start both, print their URLs (and a line if artifacts are missing),
    run until SIGINT or SIGTERM (or a server's exit), then stop both."""
    from sweeper.artifact_store import missing

    check_store(store)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        servers = start(store, stop=stop)
        try:
            say(f"MLflow UI:        {servers.mlflow.url}")
            for name, page in _sweep_pages(store, servers.mlflow.url):
                say(f"  {name}: {page}")
            say(f"optuna-dashboard: {servers.optuna.url}")
            note = missing(store)
            if note:
                say(note)
            say("Ctrl-C to stop both")
            while not stop.wait(0.5):
                ended = servers.exited()
                if ended:
                    raise SweeperError(ended)
        finally:
            servers.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _launch(name: str, port: int, log: Path, argv: list[str],
            env: dict[str, str] | None = None) -> Server:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})},
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=die_with_parent)
    return Server(name, f"http://{HOST}:{port}", process, log)


def _optuna_dashboard() -> str:
    beside = Path(sys.executable).parent / "optuna-dashboard"  # this environment's
    found = str(beside) if beside.is_file() else shutil.which("optuna-dashboard")
    if found is None:
        raise SweeperError("optuna-dashboard is not installed (pip install optuna-dashboard)")
    return found


def _wait_listening(server: Server, servers: Servers, timeout_s: float,
                    stop: threading.Event) -> None:
    """Until `server` accepts connections (the port was free when chosen); its exit or
    the timeout is one line."""
    port = int(server.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop.is_set():
            raise KeyboardInterrupt
        ended = servers.exited()
        if ended:
            raise SweeperError(f"sweeper ui: {ended}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise SweeperError(f"sweeper ui: {server.name} did not listen on {server.url} within "
                       f"{timeout_s:.0f} s: {_tail(server.log)}")


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _tail(log: Path, lines: int = 2) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(line.strip() for line in text[-lines:]) or "(no output)"
