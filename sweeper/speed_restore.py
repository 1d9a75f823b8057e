"""Puts a node's previous speed settings back when a trial ends, however it ends.

`Restorer(previous)` starts a small process and hands it the previous settings on its stdin;
the process waits for EOF there and then writes them back. EOF comes both when the trial
closes the pipe (`finish()`, after a success or an exception) and when the trial's process
dies, SIGKILL included: one mechanism for the three endings. The process is detached from
the trial: its own session (a kill of the trial's process group misses it) and no child of
the trial (Ray kills a worker's direct children when the worker exits,
RAY_kill_child_processes_on_worker_exit, before they could restore anything).

A restore that fails is reported, never raised: to `finish()`'s caller and on the restorer's
stderr (the trial's, e.g. the Ray worker's log), the only reader left if the trial died.

Run as `python -m sweeper.speed_restore`; stdlib only so that it starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 10.0
RESTORE_TIMEOUT_S = 30.0


class RestorerError(Exception):
    """The restorer could not be started; nothing has been changed yet."""


class Restorer:
    """The restorer process of one trial, ready once constructed. `previous` holds "files":
    [[path, value], ...] written back in that order, and "gpu_mw": [[index, milliwatts], ...]
    power limits set back through NVML."""

    def __init__(self, previous: dict[str, Any]) -> None:
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "sweeper.speed_restore"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         start_new_session=True)
        except OSError as exc:
            raise RestorerError(f"the settings restorer cannot start ({exc})") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        try:
            self.stdin.write(json.dumps(previous).encode() + b"\n")
            self.stdin.flush()
            ready = _read(self.stdout.fileno(), READY_TIMEOUT_S, until=b"\n")
        except OSError as exc:
            ready = f"{type(exc).__name__}: {exc}".encode()
        try:  # the restorer's first process, which exits as soon as it has forked
            self.proc.wait(READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if ready != b"ready\n":
            self._close()
            why = (f"not ready within {READY_TIMEOUT_S:g} s" if ready is None
                   else ready.decode(errors="replace").strip()
                   or f"exit code {self.proc.returncode}")
            raise RestorerError(f"the settings restorer did not start ({why})")

    def finish(self) -> list[str]:
        """Have the previous settings written back and wait for it; what could not be."""
        self._close_stdin()
        report = _read(self.stdout.fileno(), RESTORE_TIMEOUT_S)
        self._close()
        if report is None:
            return [f"the settings restorer did not finish within {RESTORE_TIMEOUT_S:g} s"]
        try:
            problems = json.loads(report)
        except ValueError:
            return [f"the settings restorer ended without a report ({report[-200:]!r})"]
        return [str(problem) for problem in problems]

    def _close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()

    def _close(self) -> None:
        self._close_stdin()
        self.stdout.close()


def _read(fd: int, timeout_s: float, until: bytes | None = None) -> bytes | None:
    """What `fd` gives until EOF (or up to `until`); None if that takes over `timeout_s`."""
    deadline, data = time.monotonic() + timeout_s, b""
    while until is None or until not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def restore(previous: dict[str, Any]) -> list[str]:
    """Write `previous` back, as much of it as possible; the problems met."""
    problems = []
    for name, value in previous.get("files", []):
        path = Path(name)
        try:
            path.write_text(f"{value}\n")
            now = path.read_text().strip()
        except OSError as exc:
            problems.append(f"{path}: cannot write {value} back: {exc.strerror or exc}")
            continue
        if now != value:
            problems.append(f"{path}: reads {now} after writing {value} back")
    if previous.get("gpu_mw"):
        problems += _restore_gpu(previous["gpu_mw"])
    return problems


def _restore_gpu(limits_mw: list[list[int]]) -> list[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        return [f"GPU power limits not set back: NVML unavailable ({type(exc).__name__}: {exc})"]
    problems = []
    try:
        for index, milliwatts in limits_mw:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                pynvml.nvmlDeviceSetPowerManagementLimit(handle, milliwatts)
            except Exception as exc:
                problems.append(f"gpu{index}: cannot set the power limit back to "
                                f"{milliwatts / 1000:g} W ({type(exc).__name__}: {exc})")
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return problems


def _tell_trial(text: str) -> None:
    with contextlib.suppress(OSError):  # the trial (stdout) or its log (stderr) may be gone
        os.write(1, text.encode() + b"\n")


def main() -> None:
    if os.fork():
        os._exit(0)  # see the module docstring: the restorer must be no child of the trial
    try:
        previous = json.loads(sys.stdin.buffer.readline())
    except ValueError:
        return  # the trial died before handing the settings over: it changed nothing
    _tell_trial("ready")
    while os.read(0, 65536):  # until EOF: the trial closed the pipe, or died
        pass
    try:
        problems = restore(previous)
    except Exception as exc:  # a bug here must still be reported
        problems = [f"restore crashed: {type(exc).__name__}: {exc}"]
    for problem in problems:
        with contextlib.suppress(OSError):
            os.write(2, f"sweeper speed restore: {problem}\n".encode())
    _tell_trial(json.dumps(problems))


if __name__ == "__main__":
    main()
