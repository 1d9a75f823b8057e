"""Doorbells between a federation's processes (engines/deployment/doorbell.py): a ring is
never lost, a wait without a ring lasts its timeout, and without a folder everyone polls."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.engines.deployment.doorbell import BELLS_ENV, Doorbell, bells_folder, ring


@pytest.fixture
def bells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = bells_folder(Path(tmp_path))
    assert folder is not None
    monkeypatch.setenv(BELLS_ENV, str(folder))
    return folder


def test_a_ring_before_the_wait_is_kept_and_taken_once(bells: Path) -> None:
    bell = Doorbell("node-0")
    ring("node-*")
    ring("node-*")
    started = time.monotonic()
    assert bell.wait(5.0) is True
    assert time.monotonic() - started < 1.0
    assert bell.wait(0.05) is False  # both rings were taken by the first wait


def test_only_the_bells_named_ring(bells: Path) -> None:
    node, server = Doorbell("node-3"), Doorbell("server")
    ring("server")
    assert server.wait(1.0) is True
    assert node.wait(0.05) is False


def test_a_ring_from_another_process_wakes_the_waiter(bells: Path) -> None:
    bell = Doorbell("exec-client-0")
    ringer = subprocess.Popen([sys.executable, "-c",
                               "import time; from sweeper.engines.deployment.doorbell import "
                               f"ring; time.sleep(0.3); ring('exec-client-0', {str(bells)!r})"])
    started = time.monotonic()
    assert bell.wait(10.0) is True
    assert time.monotonic() - started < 5.0
    assert ringer.wait(30) == 0


def test_without_a_folder_the_bell_only_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BELLS_ENV, raising=False)
    bell = Doorbell("node-0")
    assert not bell.works
    ring("node-*")  # nowhere to ring: silent
    assert bell.wait(0.01) is False


def test_a_folder_too_deep_for_a_unix_socket_is_not_made(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    assert bells_folder(deep) is None
    assert not deep.exists()


def test_a_bell_left_by_a_dead_process_is_taken_over(bells: Path) -> None:
    first = Doorbell("server")
    assert first.socket is not None
    first.socket.close()  # its process ended without removing the path
    second = Doorbell("server")
    ring("server")
    assert second.wait(1.0) is True
