"""How close each sampler gets to the true front with a quarter of the grid's budget.

    python benchmarks/sampler_hypervolume.py [--table benchmarks/grid_table.csv]
        [--seeds 5] [--write BENCHMARKS.md]

Step 1 (once, real trials): a `grid` sweep over a discrete space (precision x update codec
x local epochs x clients per round, on the quick scenario) gives every configuration's
(accuracy, energy_j); it is saved as a CSV table. Step 2 (replayed, cheap): each sampler
(nsga2, tpe, random) asks for 25% of the grid's size, answered from the table, over several
seeds; the hypervolume of what it found is compared with the grid's (the true front),
against one reference point for all (the grid's nadir pushed 10% outward).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import optuna
import ray
import yaml
from _markdown import machine, publish

from sweeper import study as studies
from sweeper.fronts import hypervolume, reference_point
from sweeper.orchestrate import run_sweep
from sweeper.space import load_space

LEVERAGES = {"precision": {"choices": ["fp32", "bf16"]},
             "update_codec": {"choices": ["none", "fp16", "int8"]},
             "local_epochs": {"low": 1, "high": 3},
             "clients_per_round": {"low": 2, "high": 4}}
SPACE = {"name": "grid-table",
         "objectives": [{"metric": "accuracy", "direction": "maximize"},
                        {"metric": "energy_j", "direction": "minimize"}],
         "scenario": {"num_clients": 4, "rounds": 3, "seed": 0}, "leverages": LEVERAGES}
KEYS = list(LEVERAGES)


def grid_size() -> int:
    sizes = [len(v["choices"]) if "choices" in v else v["high"] - v["low"] + 1
             for v in LEVERAGES.values()]
    return int(np.prod(sizes))


def build_table(path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        space_file = Path(tmp) / "grid.yaml"
        space_file.write_text(yaml.safe_dump({**SPACE, "sampler": {"name": "grid"},
                                              "budget": {"trials": grid_size(),
                                                         "parallel": 2}}))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            outcome = run_sweep(load_space(space_file), Path(tmp) / "store", dashboard=False)
        finally:
            ray.shutdown()
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*KEYS, "accuracy", "energy_j"])
            for trial in outcome.study.trials:
                result = studies.stored_result(trial)
                writer.writerow([*(trial.params[k] for k in KEYS), result.accuracy,
                                 result.energy_j])


def load_table(path: Path) -> dict[tuple, tuple[float, float]]:
    with path.open() as f:
        return {(r["precision"], r["update_codec"], int(r["local_epochs"]),
                 int(r["clients_per_round"])): (float(r["accuracy"]), float(r["energy_j"]))
                for r in csv.DictReader(f)}


def replay(table: dict, sampler: optuna.samplers.BaseSampler, budget: int) -> np.ndarray:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    found = []
    for _ in range(budget):
        trial = study.ask()
        key = (trial.suggest_categorical("precision", ["fp32", "bf16"]),
               trial.suggest_categorical("update_codec", ["none", "fp16", "int8"]),
               trial.suggest_int("local_epochs", 1, 3),
               trial.suggest_int("clients_per_round", 2, 4))
        study.tell(trial, list(table[key]))
        found.append(table[key])
    return np.array(found)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", type=Path, default=Path(__file__).with_name(
        "grid_table.csv"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    if not args.table.exists():
        build_table(args.table)
    table = load_table(args.table)
    everything = np.array(list(table.values()))
    maximize = [True, False]
    ref = reference_point(everything, maximize)
    true_hv = hypervolume(everything, maximize, ref)
    budget = len(table) // 4
    samplers = {"nsga2": lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=6),
                "tpe": lambda s: optuna.samplers.TPESampler(seed=s, multivariate=True,
                                                            n_startup_trials=5),
                "random": lambda s: optuna.samplers.RandomSampler(seed=s)}
    rows = []
    for name, make in samplers.items():
        ratios = [hypervolume(replay(table, make(seed), budget), maximize, ref) / true_hv
                  for seed in range(args.seeds)]
        rows.append((name, np.mean(ratios), np.min(ratios), np.max(ratios)))
        print(rows[-1], flush=True)
    section = "\n".join([
        "## Samplers: hypervolume at 25% of the grid",
        "",
        f"Command: `python benchmarks/sampler_hypervolume.py --seeds {args.seeds}`. Machine: "
        f"{machine()}. Grid: {len(table)} configurations (precision x update codec x local "
        "epochs x clients per round, quick scenario), measured once by a real `grid` sweep "
        f"into `{args.table.name}` and replayed; budget {budget} trials "
        f"(25%); {args.seeds} seeds; ratio = hypervolume found / hypervolume of the whole "
        "grid (the true front), same reference point (grid nadir pushed 10% outward).",
        "",
        "| sampler | mean ratio | min | max |",
        "|---|---:|---:|---:|",
        *[f"| {n} | {m:.3f} | {lo:.3f} | {hi:.3f} |" for n, m, lo, hi in rows],
        "",
    ])
    publish(section, args.write)


if __name__ == "__main__":
    main()
