"""A ServerApp task's exit: Flower's own log uploader thread, stopped and joined by
`superexec.flush_logs_by_joining`, is woken from its pause between uploads rather than
waited for, and every queued line is still pushed."""

from __future__ import annotations

import importlib
import queue

import flwr.supercore.logger as flower_logger
import pytest
from flwr.proto.log_pb2 import PushLogsResponse  # pylint: disable=E0611

from sweeper.engines.deployment import superexec


class RecordingRuntime:
    """Where Flower's uploader pushes: the lines it was given, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def PushLogs(self, request):  # Flower's method name
        self.lines.extend(request.logs)
        return PushLogsResponse()


@pytest.fixture
def serverapp_exit(monkeypatch):
    run_serverapp = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    monkeypatch.setattr(run_serverapp, "flush_logs", run_serverapp.flush_logs)
    monkeypatch.setattr(flower_logger, "time", flower_logger.time)
    monkeypatch.setattr(superexec, "_UPLOADER_WAKE", type(superexec._UPLOADER_WAKE)())
    # a pause no join could outlast: only a wake ends it within the join's 3 s
    monkeypatch.setattr(flower_logger, "LOG_UPLOAD_INTERVAL", 600.0)
    superexec._patch_serverapp_exit()


def test_the_uploader_is_woken_and_every_line_pushed(serverapp_exit):
    runtime = RecordingRuntime()
    log_queue: queue.Queue = queue.Queue()
    log_queue.put("first")
    uploader = flower_logger.start_log_uploader(log_queue, 1, 2, runtime)
    while runtime.lines != ["first"]:  # its first upload done, it pauses
        uploader.join(0.01)
    log_queue.put("last")
    assert superexec.flush_logs_by_joining(log_queue, timeout=3.0)
    assert not uploader.is_alive()
    assert runtime.lines == ["first", "last"]

