"""Run the fault-injection suite and write its table into the README's reliability section.

Every fault test carries `@pytest.mark.fault("what is injected", "what sweeper does")`; the
table lists each with the result of this run, so the README says what the suite showed:

    python3 tools/fault_table.py            # runs tests/test_faults_*.py, rewrites README
    python3 tools/fault_table.py --check    # no run: fail if README's rows and the suite differ
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
SUITE = sorted(str(p) for p in (ROOT / "tests").glob("test_faults_*.py"))


class FaultRecorder:
    """A pytest plugin noting each fault test's marker and outcome."""

    def __init__(self) -> None:
        self.rows: dict[str, list[str]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("fault")
            if marker is not None:
                self.rows[item.nodeid] = [*marker.args, "not run"]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = self.rows.get(report.nodeid)
        if row is None:
            return
        if report.when == "call" or report.outcome != "passed":
            row[2] = report.outcome


def table(rows: dict[str, list[str]]) -> str:
    lines = ["| fault injected | what sweeper does | test |", "|---|---|---|"]
    for nodeid, (fault, outcome, result) in rows.items():
        test = nodeid.split("::")[-1]
        lines.append(f"| {fault} | {outcome} | `{test}`: {result} |")
    return "\n".join(lines)


def readme_with(body: str) -> str:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{README}: no {BEGIN} ... {END} section")
    return re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", f"{BEGIN}\n{body}\n{END}", text,
                  flags=re.S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="collect only; exit 1 if the README's faults differ from the suite's")
    args = parser.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))  # sweeper itself, as `python -m pytest` from the root has it
    recorder = FaultRecorder()
    status = pytest.main(["-q", "-p", "no:cacheprovider", *(["--collect-only"] if args.check
                                                             else []), *SUITE],
                         plugins=[recorder])
    if status != 0 or not recorder.rows:
        print(f"the fault suite did not {'collect' if args.check else 'run'} cleanly "
              f"(pytest exit {int(status)}, {len(recorder.rows)} fault tests)")
        if args.check or not recorder.rows:
            return 1
    if args.check:
        written = re.findall(r"^\| (.+?) \| (.+?) \| `(\w+)`", README.read_text(), flags=re.M)
        expected = [(f, o, nodeid.split("::")[-1]) for nodeid, (f, o, _) in recorder.rows.items()]
        if written != expected:
            print(f"{README}: the reliability table is not the suite's; run tools/fault_table.py")
            return 1
        return 0
    README.write_text(readme_with(table(recorder.rows)))
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
