"""A sweep that mixes the two engines, next to the same sweep on the simulation engine only.

    python benchmarks/mixed_engines.py [--space search_spaces/compression.yaml]
        [--write BENCHMARKS.md]

Both are `sweeper pareto` runs of the space as a user starts them (a local Ray, a fresh
store each, the same sampler seed), the second with the `engine` leverage added
(`{choices: [simulation, deployment]}`). Reported: the wall time of each command, their
ratio, and how many trials ran on each engine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from _markdown import machine, publish


def sweep(space: Path, store: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweeper.cli", "pareto", "--space", str(space),
                    "--store", str(store), "--no-dashboard"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def engines_used(store: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for summary in optuna.get_all_study_summaries(f"sqlite:///{store / 'optuna.db'}"):
        study = optuna.load_study(study_name=summary.study_name,
                                  storage=f"sqlite:///{store / 'optuna.db'}")
        for trial in study.trials:
            engine = str(trial.params.get("engine", "simulation"))
            counts[engine] = counts.get(engine, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path("search_spaces/compression.yaml"))
    parser.add_argument("--write", type=Path, help="also write the section into this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweeper-mixed-") as tmp:
        root = Path(tmp)
        mixed_space = root / "mixed.yaml"
        space = yaml.safe_load(args.space.read_text())
        space["name"] = f"{space['name']}-mixed"
        space["leverages"]["engine"] = {"choices": ["simulation", "deployment"]}
        mixed_space.write_text(yaml.safe_dump(space, sort_keys=False))
        simulation_s = sweep(args.space, root / "simulation")
        mixed_s = sweep(mixed_space, root / "mixed")
        counts = engines_used(root / "mixed")
    section = "\n".join([
        "## Engines: a sweep mixing both next to simulation only", "",
        f"`python benchmarks/mixed_engines.py --space {args.space}` on {machine()}: two "
        "`sweeper pareto` commands, each with a fresh store and its own local Ray, the "
        "second with `engine: {choices: [simulation, deployment]}` added.", "",
        "| sweep | wall s |", "|---|---|",
        f"| simulation only | {simulation_s:.0f} |",
        f"| mixed ({', '.join(f'{n} {e}' for e, n in sorted(counts.items()))}) | "
        f"{mixed_s:.0f} |", "",
        f"Mixed / simulation only: {mixed_s / simulation_s:.2f}x.", ""])
    publish(section, args.write)


if __name__ == "__main__":
    main()
