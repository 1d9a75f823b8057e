"""Ctrl-C, SIGTERM and SIGHUP for a sweep's driver, without a traceback.

The first SIGINT asks the sweep to stop: no trial starts any more, the running ones finish
and are logged. A second SIGINT, SIGTERM (what a batch scheduler sends when a walltime
ends) or SIGHUP (the terminal or ssh session gone) stops at once: `StopNow` is raised
wherever the driver is, the running trials are cancelled and their configurations marked
interrupted (a resumed driver takes them over under their own numbers). Either way one
line says how to resume. Stopping at any point is safe because the stores are written so
that a SIGKILL at any point is (see DESIGN.md).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from sweeper.tracking import Tracker


class StopNow(KeyboardInterrupt):
    """A second SIGINT or SIGTERM. A KeyboardInterrupt, because that is the one exception
    Ray's waits let out of a signal handler (any other becomes a SystemError there); Ray
    raises a plain KeyboardInterrupt of its own, which leaving `Interrupts` turns back
    into this."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Interrupts:
    """While entered (in the main thread), SIGINT and SIGTERM are the sweep's to handle.
    `resume_line` is the one line said at the first of them."""

    def __init__(self, resume_line: str = "",
                 say: Callable[[str], None] = _to_stderr) -> None:
        self.resume_line, self.say = resume_line, say
        self.requested = False  # stop starting trials
        self.signum: int | None = None  # the last signal received
        self._raised = False
        self._previous: dict[int, object] = {}
        self._saying: threading.Thread | None = None

    def __enter__(self) -> Interrupts:
        self.install()
        return self

    def install(self) -> None:
        """Take SIGINT and SIGTERM (again: `ray.init` installs a SIGTERM handler of its
        own, which aborts the driver)."""
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: ssh gone
                previous = signal.signal(signum, self._handle)
                self._previous.setdefault(signum, previous)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        if self._saying is not None:
            self._saying.join(timeout=5)
        if isinstance(exc, KeyboardInterrupt) and self._raised:
            raise StopNow(self.signum or signal.SIGINT) from None

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal's number."""
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum
        first, self.requested = not self.requested, True
        if first:  # said by another thread: this one may be inside the console's lock
            what = ("no new trial starts, running ones finish (Ctrl-C again: stop now)"
                    if signum == signal.SIGINT else "stopping now")
            line = f"sweeper: {signal.Signals(signum).name}: {what}; {self.resume_line}"
            self._saying = threading.Thread(target=self.say, args=(line,), daemon=True)
            self._saying.start()
        if (signum != signal.SIGINT or not first) and not self._raised:
            self._raised = True  # once: the clean-up after it is not cut short again
            raise StopNow(signum)


def record_stop(unfinished: list[optuna.Trial], tracker: Tracker, parent_run_id: str,
                stopped: bool) -> None:
    """As a driver stops: the configurations it leaves unfinished are marked interrupted
    (see `study.mark_interrupted`), and a sweep stopped by a signal has its MLflow run
    KILLED until a resumed driver finishes it. Best effort: a store that fails here must
    not hide why the driver stopped."""
    from sweeper.study import mark_interrupted

    with suppress(Exception):
        mark_interrupted(unfinished)
    if stopped:
        with suppress(Exception):
            tracker.client.set_terminated(parent_run_id, "KILLED")
