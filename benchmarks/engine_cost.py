"""What a trial costs on the deployment engine next to the simulation engine.

    python benchmarks/engine_cost.py [--clients 2 10] [--rounds 2] [--trials 4]
        [--framing message|tensor] [--write BENCHMARKS.md]

The same configurations (the quick space's data, `--rounds` rounds, every client every
round, loopback: no shaped link) run one after the other in this process, as a sweep's Ray
worker runs them: `--trials` trials per engine and client count, each a different seed,
the two engines taking turns.
The first deployment trial starts the federation (SuperLink, SuperNodes, SuperExecs); the
later ones reuse it, as trials of a sweep do. Reported: wall time of each trial (first,
then the median of the later ones), the median ratio of the later pairs, the CPU-seconds of
each deployment process kind during the later trials (where the time still goes), and that the
two engines' per-round accuracies are equal. Torch runs one thread per process, as in a
Ray task reserving one CPU. `--framing tensor` sends each tensor as its own Flower Array
(Flower's default) instead of one Array per message, and is written as a section of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from _markdown import machine, publish

from sweeper.config import Scenario, TrialConfig, resolve_leverages
from sweeper.engines import run_trial_federation
from sweeper.engines.deployment import OWNER_ENV
from sweeper.engines.deployment.kept import KEPT

TICK = os.sysconf("SC_CLK_TCK")
KINDS = {  # what a deployment process is, from its command line or name
    "deployment.superlink": "SuperLink",
    "deployment.supernode": "SuperNodes",
    "flwr-clientapp": "ClientApp tasks",
    "flwr-serverapp": "ServerApp task",
    "sweeper-zygote": "trial zygotes (warm-up)",
    "deployment.superexec": "SuperExecs",
}


def config_for(engine: str, clients: int, rounds: int, seed: int,
               framing: str = "message") -> TrialConfig:
    scenario = Scenario(num_clients=clients, rounds=rounds, engine=engine, client_eval=False,
                        partition="iid", meters="modeled")
    leverages = resolve_leverages({"clients_per_round": clients, "framing": framing}, scenario)
    return TrialConfig(scenario, leverages, seed)


def federation_cpu() -> dict[str, float]:
    """CPU-seconds so far of this process's deployment processes, by kind (children that
    ended count in their parent's: a task in its zygote's, a zygote in its SuperExec's)."""
    owner = f"{OWNER_ENV}={os.getpid()}".encode()
    cpu: dict[str, float] = defaultdict(float)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if owner not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            name = (proc / "cmdline").read_bytes() + (proc / "comm").read_bytes()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = next((k for marker, k in KINDS.items() if marker.encode() in name), "other")
        cpu[kind] += sum(int(x) for x in fields[11:15]) / TICK
    return cpu


def run(clients: int, rounds: int, trials: int, framing: str) -> dict[str, dict]:
    """Both engines' trials in turns (for each seed a simulation trial, then a deployment
    trial), so that each pair meets the machine in the same state: this VM's speed drifts
    by a quarter within the hour, which made the ratio of two separate series move with
    it. Where a kept federation's CPU goes is counted over the later deployment trials."""
    engines = ("simulation", "deployment")
    walls = {engine: [] for engine in engines}
    accuracies = {engine: [] for engine in engines}
    spent: dict[str, float] = defaultdict(float)
    for seed in range(trials):
        for engine in engines:
            before = federation_cpu()
            own = time.process_time()
            started = time.perf_counter()
            rounds_ = run_trial_federation(config_for(engine, clients, rounds, seed, framing))
            walls[engine].append(time.perf_counter() - started)
            accuracies[engine].append([r.accuracy for r in rounds_])
            if seed and engine == "deployment":  # a later trial: where the time goes
                spent["trial process"] += time.process_time() - own
                for kind, cpu in federation_cpu().items():
                    spent[kind] += cpu - before.get(kind, 0.0)
    KEPT.close()
    sim, dep = walls["simulation"], walls["deployment"]
    ratios = [d / s for s, d in zip(sim[1:], dep[1:], strict=True)]
    return {"sim_first": sim[0], "sim_later": statistics.median(sim[1:]),
            "dep_first": dep[0], "dep_later": statistics.median(dep[1:]),
            "ratio": statistics.median(ratios), "ratio_range": (min(ratios), max(ratios)),
            "same": accuracies["simulation"] == accuracies["deployment"],
            "cpu": {k: v / (trials - 1) for k, v in spent.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--framing", choices=("message", "tensor"), default="message")
    parser.add_argument("--write", type=Path, help="also write the section into this file")
    args = parser.parse_args()
    run_trial_federation(config_for("simulation", 2, 1, 0))  # corpus and features cached
    rows, costs, same = [], [], True
    for clients in args.clients:
        got = run(clients, args.rounds, args.trials, args.framing)
        same &= got["same"]
        low, high = got["ratio_range"]
        rows.append(f"| {clients} | {got['sim_first']:.2f} | {got['sim_later']:.2f} | "
                    f"{got['dep_first']:.2f} | {got['dep_later']:.2f} | "
                    f"{got['ratio']:.1f}x ({low:.1f}x-{high:.1f}x) |")
        spent = ", ".join(f"{kind} {cpu:.2f}" for kind, cpu in
                          sorted(got["cpu"].items(), key=lambda kv: -kv[1]))
        costs.append(f"- {clients} clients: {spent}")
    tensor = args.framing == "tensor"
    section = "\n".join([
        "## Engines: a deployment trial next to a simulation trial"
        + (", one Flower Array per tensor" if tensor else ""), "",
        f"`python benchmarks/engine_cost.py --clients {' '.join(map(str, args.clients))} "
        f"--rounds {args.rounds} --trials {args.trials}"
        + (" --framing tensor" if tensor else "") + f"` on {machine()} "
        f"(torch threads per process: {torch.get_num_threads()}). Wall seconds of one trial "
        "on loopback; \"later\" is the median of the trials after the first, which reuse the "
        "process's federation as a sweep's trials do. The engines take turns (a simulation "
        "trial, then a deployment trial, per seed); the ratio is the median of the later "
        "pairs' ratios (their range in brackets).", "",
        "| clients | simulation first | simulation later | deployment first | "
        "deployment later | later, deployment / simulation |",
        "|---|---|---|---|---|---|", *rows, "",
        "Where a later deployment trial's CPU goes (CPU-seconds per trial, by process kind):",
        "", *costs, "",
        f"Per-round accuracies of the two engines equal for every seed: {same}.", ""])
    publish(section, args.write)


if __name__ == "__main__":
    main()
