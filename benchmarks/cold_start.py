"""The cold start a trial's joules no longer carry: the same configuration run several
times in one fresh process, with the warm-up (as sweeper runs) and without it.

    python benchmarks/cold_start.py [--runs 4] [--write BENCHMARKS.md]

Each arm is a fresh Python process (as a fresh Ray worker or `sweeper trial` is) running the
quick scenario's configuration (bf16, no codec, 1 epoch, 2 clients per round, 3 rounds)
`--runs` times; modeled meters (CPU time x the laptop profile). Without the warm-up, the
first run pays torch's and Flower's first-use set-up inside its counted client windows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _markdown import machine, publish

ARM = """
import json, sys
import sweeper.fl.client_app
import sweeper.trial
from sweeper.space import load_space
from sweeper.trial import prepare, run_trial
if sys.argv[2] == "off":  # the trial's warm-up and the ClientApp's own
    sweeper.trial.warm_up = lambda config: None
    sweeper.fl.client_app.warm_client = lambda config, partition_id: None
space = load_space("search_spaces/quick.yaml")
prepare(space.scenario, space.seed)
config = space.trial_config(space.with_overrides({"precision": "bf16", "update_codec": "none",
    "local_epochs": "1", "clients_per_round": "2"}))
out = []
for _ in range(int(sys.argv[1])):
    result = run_trial(config)
    out.append({"energy_j": result.energy_j, "round1_client_j":
                result.rounds[0].energy["client_compute_j"], "accuracy": result.accuracy})
print(json.dumps(out))
"""


def arm(runs: int, warm_up: bool) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", ARM, str(runs), "on" if warm_up else "off"],
                          capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    rows = []
    for warm_up in (False, True):
        runs = arm(args.runs, warm_up)
        later = statistics.median(r["energy_j"] for r in runs[1:])
        rows.append(f"| {'with' if warm_up else 'without'} | "
                    f"{runs[0]['round1_client_j']:.2f} | "
                    f"{statistics.median(r['round1_client_j'] for r in runs[1:]):.2f} | "
                    f"{runs[0]['energy_j']:.2f} | {later:.2f} | "
                    f"{runs[0]['energy_j'] / later:.3f}x | "
                    f"{len({r['accuracy'] for r in runs})} |")
    publish("\n".join([
        "## Cold start: a process's first trial vs its later ones",
        "",
        f"Command: `python benchmarks/cold_start.py --runs {args.runs}`. Machine: "
        f"{machine()}. The quick scenario's configuration (bf16, codec none, 1 epoch, 2 "
        "clients per round, 3 rounds), modeled meters, run "
        f"{args.runs} times in one fresh process per arm; later = median of runs 2..n.",
        "",
        "| warm-up | round 1 client J, first run | round 1 client J, later | trial J, first "
        "run | trial J, later | first / later | distinct accuracies |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows, ""]), args.write)


if __name__ == "__main__":
    main()
