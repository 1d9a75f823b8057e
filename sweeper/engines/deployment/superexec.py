"""Our SuperExec: Flower's task loop, with every task launched warm.

`flower-superexec` starts a new `flwr-clientapp` / `flwr-serverapp` interpreter for every
task: each imported torch and Flower and read the trial's data again, and a ClientApp
warmed its compute path before opening its counted window (`fl/warmup.py`): about 6
CPU-seconds per message, most of a deployment trial's time. Here that is paid once:

- this process imports the apps (torch, Flower, sweeper) and keeps them;
- for each trial, a *trial zygote* is forked from it and warms the trial's compute path
  (`warm_client` for the SuperNode's partition, or `warm_server`), uncounted, on one torch
  thread (libgomp cannot start its thread pool again in a child of a process that used
  it: the children would hang in their first parallel region);
- each task is a fork of the trial's zygote running Flower's own entry point
  (`flwr-clientapp` / `flwr-serverapp`, its `main()` with the arguments Flower's
  subprocess executor would give it); the apps set the trial's thread count
  (`kws.compute_threads`), as they do under the simulation engine.

So no task sees another trial's state: the trial zygote holds only its own trial's warm
caches and is discarded when the next trial is announced, and every task is a fresh fork
that ends with its message. A task's CPU time is its own process's (the ClientApp's
modeled meter reads it there). The trial is announced by a file (`announce`), which the
trial process writes before starting its run and whose `ready-<name>` answer it waits for;
without one (SuperNodes on other machines) tasks are forked from this process itself and
warm themselves, as Flower's would.

Tasks are polled for every `FAST_POLL_S` after activity, backing off to `IDLE_POLL_S`: an
idle federation kept between trials costs almost nothing. With a doorbell (`doorbell.py`,
rung by the SuperNode when it stored a message, or by the trial when it started a run) it
waits for the ring instead, looking anyway every `PATIENCE_S`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import signal
import sys
import threading
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from sweeper.engines.deployment.doorbell import Doorbell, clock_sleeping_with
from sweeper.engines.deployment.hooks import patched_module
from sweeper.engines.deployment.processes import die_with_parent
from sweeper.engines.deployment.pulls import retry_object_pulls_promptly
from sweeper.engines.deployment.telemetry import no_events_when_off
from sweeper.engines.deployment.transport import flower_clients_kept_alive

FAST_POLL_S = 0.02
IDLE_POLL_S = 0.25
TASK_COMMANDS = {"server": "flwr-serverapp", "client": "flwr-clientapp"}
ANNOUNCE = "trial.json"  # {"generation": n, "config": TrialConfig JSON}


def announce(folder: Path, generation: int, config_json: str) -> None:
    """Tell the SuperExecs sharing `folder` which trial comes next (written whole)."""
    tmp = folder / f".{ANNOUNCE}.tmp"
    tmp.write_text(json.dumps({"generation": generation, "config": config_json}))
    os.replace(tmp, folder / ANNOUNCE)


def ready_file(folder: Path, name: str, generation: int) -> Path:
    return folder / f"ready-{name}-{generation}"


def failed_file(ready: Path) -> Path:
    """Where a zygote that could not warm up says why, instead of answering `ready`."""
    return ready.with_name("failed-" + ready.name.removeprefix("ready-"))


@cache
def _entry_point(command: str):
    """The function behind one of Flower's console scripts (`flwr-clientapp`, ...), loaded
    once in the SuperExec: importing it (Flower's runtime, FastAPI, SQLAlchemy ...) took
    1.6 s, which every task paid again."""
    (found,) = entry_points(group="console_scripts", name=command)
    return found.load()


def _run_task(argv: list[str], quiet: bool) -> None:
    """In a fresh fork: what `argv` would have done in a new interpreter; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        die_with_parent(argv[0])
        if quiet:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
        sys.argv = argv
        _entry_point(argv[0])()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


_UPLOADER_WAKE = threading.Event()  # set (in a ServerApp task) when its logs are flushed


def flush_logs_by_joining(log_queue, timeout: float = 3.0) -> bool:
    """Flower's `flush_logs` (at a ServerApp's exit) waits for the log queue to empty and
    then a fixed 1 s "to allow the PushLogs call to complete", which every trial paid. This
    stops the log uploader thread, wakes it from its pause between uploads (up to
    `LOG_UPLOAD_INTERVAL`, 0.2 s: the last 0.1 s of every trial, on average, in the phase
    timestamps) and joins it: all queued logs are pushed, the last call has completed, and
    no longer is waited. (Lines logged after this stay local.)"""
    from flwr.supercore.logger import _log_uploader, flush_logs

    uploader = next((thread for thread in threading.enumerate()
                     if getattr(thread, "_target", None) is _log_uploader), None)
    if uploader is None:
        return flush_logs(log_queue, timeout)
    log_queue.put(None)
    _UPLOADER_WAKE.set()
    uploader.join(timeout)
    return not uploader.is_alive()


def _wakeable_pause(seconds: float) -> None:
    _UPLOADER_WAKE.wait(seconds)


def _patch_serverapp_exit() -> None:
    # the module (its package exports a function of the same name)
    patched_module("flwr.superlink.runtime.run_serverapp",
                   "flush_logs").flush_logs = flush_logs_by_joining
    patched_module("flwr.supercore.logger", "time").time = clock_sleeping_with(_wakeable_pause)


def _argv(spec) -> list[str]:
    """The command line Flower's `SubprocessExecutor` builds for `spec`."""
    from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, TASK_TYPE_TO_COMMAND

    argv = [TASK_TYPE_TO_COMMAND[spec.task_type],
            TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type], spec.runtime_api_address,
            "--token", spec.token]
    if spec.insecure:
        argv.append("--insecure")
    elif spec.root_certificates_path is not None:
        argv += ["--root-certificates", spec.root_certificates_path]
    return argv


class TrialZygote:
    """A fork of the SuperExec warmed for one trial; forks that trial's tasks on request."""

    def __init__(self, generation: int, config_json: str, role: str,
                 ready: Path | None) -> None:
        self.generation = generation
        read, self.requests = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.requests)
            self._serve(read, config_json, role, ready)
        os.close(read)

    @staticmethod
    def _serve(read: int, config_json: str, role: str, ready: Path | None) -> None:
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            die_with_parent("sweeper-zygote")
            try:
                warm(config_json, role)
            except Exception as exc:  # the trial fails at once, with the reason
                if ready is not None:
                    failed_file(ready).write_text(f"{type(exc).__name__}: {exc}")
                raise
            if ready is not None:
                ready.touch()
            with os.fdopen(read, "rb") as requests:
                while True:
                    try:
                        argv, quiet = pickle.load(requests)
                    except EOFError:
                        break
                    if os.fork() == 0:
                        _run_task(argv, quiet)
                    _reap()
            code = 0
        finally:
            os._exit(code)

    def launch(self, argv: list[str], quiet: bool) -> None:
        os.write(self.requests, pickle.dumps((argv, quiet)))

    def close(self) -> None:
        os.close(self.requests)  # it forks what is queued, then ends


def warm(config_json: str, role: str) -> None:
    """Run the trial's compute path for `role` once in this process, on one torch thread
    (see the module's docstring), uncounted."""
    import torch

    from sweeper.config import TrialConfig
    from sweeper.energy.windows import window_meter
    from sweeper.fl.task import client_data
    from sweeper.fl.warmup import warm_client, warm_server

    config = TrialConfig.from_json(config_json)
    torch.set_num_threads(1)
    if role == "server":
        warm_server(config)
    else:
        warm_client(config, int(role))
        client_data(config, int(role))  # this trial's partition (by its seed), cached here
        # the ClientApp's counter window: opening the node meter (Zeus's imports and its
        # search for counters, cached per process) took 1-2 s in every task otherwise
        window_meter(config.scenario.meters)


def _reap() -> None:
    """Collect ended children (tasks, discarded zygotes) so none stays a zombie."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


class ForkExecutor:
    """Flower's `Executor` protocol (see `flwr.supercore.superexec.executor.types`): tasks
    are forks of the current trial's zygote, else of this process."""

    def __init__(self, name: str, role: str, announcements: Path | None) -> None:
        self.name, self.role, self.announcements = name, role, announcements
        self.zygote: TrialZygote | None = None
        self.seen: float | None = None
        self.warmed = False

    def refresh(self) -> None:
        """Start a zygote for the trial announced last, if it is a new one."""
        if self.announcements is None:
            return
        path = self.announcements / ANNOUNCE
        try:
            stamp = path.stat().st_mtime_ns
            if stamp == self.seen:
                return
            announced = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        self.seen = stamp
        generation = int(announced["generation"])
        if self.zygote is not None and self.zygote.generation == generation:
            return
        if self.zygote is not None:
            self.zygote.close()
        elif not self.warmed:
            # Torch's lazy set-up (kernels, oneDNN) is the same for every trial: done here
            # once, every trial's zygote inherits it. This leaves the first trial's warm
            # caches here too, keyed by its config: no other trial can read them as its own.
            # (If it fails, the trial's zygote fails the same way and says why.)
            with contextlib.suppress(Exception):
                warm(announced["config"], self.role)
            self.warmed = True
        self.zygote = TrialZygote(generation, announced["config"], self.role,
                                  ready_file(self.announcements, self.name, generation))

    def get_eligible_capacity(self, supported_task_types, **_) -> tuple[set, set[str]]:
        return supported_task_types, set()

    def wait_for_capacity(self, *_, **__) -> None:
        return None

    def launch(self, spec):
        from flwr.supercore.superexec.executor import LaunchResult

        argv = _argv(spec)
        if self.zygote is not None:
            self.zygote.launch(argv, spec.suppress_output)
        elif os.fork() == 0:
            _run_task(argv, spec.suppress_output)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        _reap()

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()


def serve(runtime_api_address: str, root_certificates: str | None, name: str, role: str,
          announcements: Path | None) -> None:
    """Acquire tasks from the Runtime API at `runtime_api_address` and launch them, until
    killed."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.superexec.plugin import AutoExecPlugin

    import sweeper.engines.deployment.apps  # noqa: F401  (the imports every task needs)

    _entry_point(TASK_COMMANDS["server" if role == "server" else "client"])
    if role == "server":
        _patch_serverapp_exit()
    retry_object_pulls_promptly()  # these are inherited by every task forked from here
    flower_clients_kept_alive()
    no_events_when_off()

    insecure = root_certificates is None
    executor = ForkExecutor(name, role, announcements)
    plugin = AutoExecPlugin(runtime_api_address=runtime_api_address, insecure=insecure,
                            root_certificates_path=root_certificates, executor=executor)
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=insecure,
        root_certificates=Path(root_certificates).read_bytes() if root_certificates else None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    bell = Doorbell(f"exec-{name}", FAST_POLL_S, IDLE_POLL_S)
    try:
        while True:
            executor.refresh()
            executor.reconcile()
            types, _ = executor.get_eligible_capacity(set(plugin.supported_task_types))
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=types))
            if res.HasField("task") and res.token:
                plugin.launch_task(token=res.token, task=res.task)
                bell.worked()
                if bell.works:
                    continue  # another task may be queued: look again at once
            bell.idle()
    finally:
        executor.close()
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--root-certificates", help="CA of the Runtime API (else insecure)")
    parser.add_argument("--name", required=True, help="this SuperExec's name, in ready files")
    parser.add_argument("--role", required=True, help='"server", or the client partition')
    parser.add_argument("--announcements", type=Path,
                        help="the folder where trials are announced (see `announce`)")
    args = parser.parse_args(argv)
    serve(args.runtime_api_address, args.root_certificates, args.name, args.role,
          args.announcements)


if __name__ == "__main__":
    main()
