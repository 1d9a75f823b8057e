"""Half the data in one trial: `data_fraction` 0.5 against 1.0, each a `sweeper trial` in a
fresh process, as a user checks a leverage's effect.

    python benchmarks/data_fraction.py [--pairs 8] [--write BENCHMARKS.md]

The configuration of `tests/test_cold_start.py` (the tests' tiny corpus, 2 clients, 1 round,
10 local epochs, random selection), modeled meters; client J is the trial's
`client_compute_j` (training, selection and the client's evaluation). Pairs run one after
the other: 1.0 then 0.5. Reported: every pair's ratio, and the spread of the full-data
trials, which is the machine's own run-to-run noise (the same configuration each time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _markdown import machine, publish

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def space_file(folder: Path) -> Path:
    from conftest import TINY_SCENARIO, write_space

    return write_space(folder / "fraction.yaml", scenario={**TINY_SCENARIO, "rounds": 1},
                       leverages={"local_epochs": {"value": 10},
                                  "data_fraction": {"low": 0.1, "high": 1.0},
                                  "summary": {"choices": ["random"]}})


def client_j(space: Path, store: Path, fraction: str) -> float:
    done = subprocess.run([sys.executable, "-m", "sweeper.cli", "trial", "--space", str(space),
                           "--store", str(store), "--set", f"data_fraction={fraction}",
                           "--json"], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)["result"]
    return sum(r["energy"]["client_compute_j"] for r in result["rounds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        space = space_file(Path(tmp))
        pairs = [(client_j(space, Path(tmp) / "store", "1.0"),
                  client_j(space, Path(tmp) / "store", "0.5")) for _ in range(args.pairs)]
    ratios = [half / full for full, half in pairs]
    fulls = [full for full, _ in pairs]
    publish("\n".join([
        "## Data fraction: half the data in one fresh-process trial",
        "",
        f"Command: `python benchmarks/data_fraction.py --pairs {args.pairs}`. Machine: "
        f"{machine()}. Each trial a `sweeper trial` in a fresh process (tiny corpus, 2 "
        "clients, 1 round, 10 local epochs, random selection, modeled meters).",
        "",
        "| pair | client J, data_fraction 1.0 | client J, 0.5 | 0.5 / 1.0 |",
        "|---:|---:|---:|---:|",
        *[f"| {i + 1} | {full:.2f} | {half:.2f} | {half / full:.2f}x |"
          for i, (full, half) in enumerate(pairs)],
        "",
        f"0.5 / 1.0: mean {statistics.fmean(ratios):.2f}x, from {min(ratios):.2f}x to "
        f"{max(ratios):.2f}x. The same full-data configuration ran at {min(fulls):.2f} to "
        f"{max(fulls):.2f} J (coefficient of variation "
        f"{statistics.stdev(fulls) / statistics.fmean(fulls):.0%}): one trial's CPU time "
        "on this machine varies that much from run to run, which is what `budget.repeats` "
        "is for.", ""]), args.write)


if __name__ == "__main__":
    main()
