"""Doorbells between a federation's processes (engines/deployment/doorbell.py): a ring is
never lost, a wait without a ring lasts its timeout, and without a folder everyone polls."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
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


def test_without_a_bell_idle_backs_off_and_work_brings_it_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BELLS_ENV, raising=False)
    bell = Doorbell("exec-client-0", fastest_s=0.01, slowest_s=0.02)
    bell.idle()
    bell.idle()
    assert bell.poll_s == 0.02  # 0.01, 0.015, then held at slowest_s
    bell.worked()
    assert bell.poll_s == 0.01


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_ring() -> None:
    """The folder is a fresh 0700 temp folder, as a federation's home is: a process of
    another user (nobody) cannot reach the bell to wake it."""
    home = Path(tempfile.mkdtemp(prefix="sweeper-deploy-"))
    try:
        folder = bells_folder(home)
        assert folder is not None
        os.environ[BELLS_ENV] = str(folder)
        bell = Doorbell("server")
        assert bell.works
        child = os.fork()
        if child == 0:  # as nobody, try what `ring` does (no exec: root's Python is 0700)
            code = 1
            try:
                os.setuid(65534)
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(
                    b"!", str(folder / "server.bell"))
                code = 0
            except PermissionError:
                code = 13
            finally:
                os._exit(code)
        assert os.waitpid(child, 0)[1] >> 8 == 13
        assert bell.wait(0.1) is False  # and nothing rang
    finally:
        os.environ.pop(BELLS_ENV, None)
        shutil.rmtree(home)
