"""The roster of a federation's SuperNodes: node ids by partition, owner-only."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sweeper.engines.deployment.roster import ROSTER_ENV, enroll, read_roster, roster_folder


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_enroll(monkeypatch: pytest.MonkeyPatch) -> None:
    """A federation's home is a fresh 0700 temp folder and its roster owner-only: a process
    of another user (nobody) cannot put its node id in the order clients are sampled in,
    while the federation's own SuperNodes can."""
    home = Path(tempfile.mkdtemp(prefix="sweeper-deploy-"))
    try:
        folder = roster_folder(home)
        monkeypatch.setenv(ROSTER_ENV, str(folder))
        child = os.fork()
        if child == 0:  # as nobody, what a SuperNode does (no exec: root's Python is 0700)
            code = 1
            try:
                os.setuid(65534)
                (folder / "1").write_text("666")
                code = 0
            except PermissionError:
                code = 13
            finally:
                os._exit(code)
        assert os.waitpid(child, 0)[1] >> 8 == 13
        enroll("0", 42)
        assert read_roster(folder) == {42: 0}
    finally:
        shutil.rmtree(home)
