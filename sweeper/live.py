"""What the terminal shows while a sweep runs: its running trials and its front so far."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from sweeper.orchestrate import SweepProgress
    from sweeper.space import SearchSpace


COMPACT: dict[str, Any] = {"box": box.SIMPLE_HEAD, "show_edge": False, "padding": (0, 1),
                            "collapse_padding": True}


def fmt(value: Any) -> str:
    """A value for the terminal: a float to 4 significant digits, anything else as is
    (ints are counts, shown whole); None as nothing."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


class LiveView:
    """The live view of a sweep, rendered by rich at every refresh (`__rich__`), so that
    elapsed times and rounds move between the driver's own events. A running trial's round
    is the one its federation last put in Ray's KV (`attempts.RoundProgress`); its elapsed
    time counts from when the view first saw it leave Ray's queue."""

    POLL_S = 0.5  # rounds read from Ray's KV at most this often

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.progress: SweepProgress | None = None
        self.since: dict[int, float] = {}  # trial number -> first seen started (monotonic)
        self.rounds: dict[str, int | None] = {}  # task id -> its round, as last read
        self.read_at = 0.0

    def update(self, progress: SweepProgress) -> None:
        """In the driver's thread: Ray is asked for rounds here, never from rich's refresh
        thread (a call into Ray racing the driver's shutdown of it can hang the driver)."""
        self.progress = progress
        self._read_rounds(self._tasks(progress))

    def __rich__(self) -> RenderableType:
        progress = self.progress
        if progress is None:
            return Text("")
        try:
            running = dict(progress.running)
        except RuntimeError:  # the driver changed it mid-copy: next refresh
            running = {}
        return progress_view(progress, self.space,
                             self._running_rows(running, self._tasks(progress)))

    @staticmethod
    def _tasks(progress: SweepProgress) -> dict[int, dict[int, str]]:
        try:
            return {number: dict(by_repeat) for number, by_repeat
                    in dict(getattr(progress, "tasks", {})).items()}
        except RuntimeError:  # the driver changed them mid-copy: next refresh
            return {}

    def _read_rounds(self, tasks: dict[int, dict[int, str]]) -> None:
        from sweeper import attempts  # Ray: only once a sweep runs

        now = time.monotonic()
        if now - self.read_at < self.POLL_S:
            return
        self.read_at = now
        ids = {task for by_repeat in tasks.values() for task in by_repeat.values()}
        self.rounds = {task: attempts.trial_round(task) for task in ids}
        for number, by_repeat in tasks.items():
            if number not in self.since and any(self.rounds.get(t) is not None
                                                for t in by_repeat.values()):
                self.since[number] = now

    def _running_rows(self, running: dict[int, dict[str, Any]],
                      tasks: dict[int, dict[int, str]]) -> list[list[str]]:
        rows = []
        for number in sorted(running):
            params = running[number]
            total = int(params.get("rounds") or self.space.scenario.rounds)
            rounds = [self.rounds.get(task) for _, task in sorted(tasks.get(number, {}).items())]
            started = number in self.since
            shown = [f"{r}/{total}" if r else "starting" for r in rounds if r is not None]
            where = ", ".join(shown) if shown else ("starting" if started else "queued")
            elapsed = f"{time.monotonic() - self.since[number]:.0f} s" if started else ""
            rows.append([str(number), *(fmt(params.get(lev.name))
                                        for lev in self.space.leverages), where, elapsed])
        return rows


def progress_view(progress: SweepProgress, space: SearchSpace,
                  running_rows: list[list[str]] | None = None) -> RenderableType:
    """The sweep's counts, its running trials (`running_rows`: trial, leverages, round,
    elapsed) and its front so far, with the Ray dashboard and the last event below."""
    title = (f"{progress.sweep}: {progress.done}/{progress.budget} done, "
             f"{len(progress.running)} running, {progress.failed} failed"
             + (f", {progress.retried} retried by Ray" if progress.retried else ""))
    levers = [lev.name for lev in space.leverages]
    rows = running_rows if running_rows is not None else [
        [str(n), *(fmt(p.get(name)) for name in levers), "", ""]
        for n, p in sorted(progress.running.items())]
    running = FittedTable(["running", *levers, "round", "elapsed"], rows,
                          right={"running", "round", "elapsed"})
    front = FittedTable(
        ["trial", *levers, *(o.metric for o in space.objectives)],
        [[str(t.number), *(fmt(t.params.get(name)) for name in levers),
          *(fmt(v) for v in t.values)]
         for t in sorted(progress.front, key=lambda t: t.number)],
        right={"trial", *(o.metric for o in space.objectives)})
    footer = "   ".join(line for line in (
        f"Ray dashboard: {progress.dashboard_url}" if progress.dashboard_url else "",
        progress.last_event) if line)
    return Group(Text(title, style="bold"), running, Text(""), Text("front so far",
                                                                     style="bold"),
                 front, Text(footer, style="dim"))


class FittedTable:
    """A compact table whose long headers break after an underscore (`clients_per_` over
    `round`) when it would not fit the terminal whole: rich wraps only at spaces, and
    would cut such a header short."""

    def __init__(self, columns: list[str], rows: list[list[str]],
                 right: set[str] | frozenset[str] = frozenset()) -> None:
        self.columns, self.rows, self.right = columns, rows, right

    def table(self, split: bool) -> Table:
        table = Table(**COMPACT)
        for column in self.columns:
            table.add_column(split_header(column) if split else column,
                             justify="right" if column in self.right else "left")
        for row in self.rows:
            table.add_row(*row)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table(split=False)
        whole = Measurement.get(console, options.update_width(10**4), table).maximum
        if whole > options.max_width:
            table = self.table(split=True)
        yield table


def split_header(name: str) -> str:
    """`name` on two lines, broken after the underscore nearest its middle."""
    cuts = [i for i, c in enumerate(name) if c == "_"]
    if len(name) <= 8 or not cuts:
        return name
    cut = min(cuts, key=lambda i: abs(2 * i - len(name)))
    return name[:cut + 1] + "\n" + name[cut + 1:]
