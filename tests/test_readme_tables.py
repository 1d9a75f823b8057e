"""The README's tables are the code's: the reliability table lists the fault suite's tests,
the model table holds the parameters and FLOPs the models' code counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_reliability_table_is_the_fault_suites() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "fault_table.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_the_model_table_is_the_codes() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import flops_table

    assert flops_table.main(["--check"]) == 0
