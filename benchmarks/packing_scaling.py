"""Trial packing and node scaling of a sweep on a local multi-node Ray cluster.

    python benchmarks/packing_scaling.py [--trials 16] [--nodes 1 2 3] [--write BENCHMARKS.md]

For each node count N, a `ray.cluster_utils.Cluster` of N nodes with 1 CPU each runs the
same sweep of `--trials` identical-work trials (cpus_per_trial = 1, so floor(N / 1) = N run
at a time). Packing: sweep wall time vs the ideal, sum(trial wall times) / slots. Scaling:
trials per hour against the 1-node figure. All nodes share this machine's physical cores:
a node count above the core count cannot scale here, whatever the engine does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray
import yaml
from _markdown import machine, publish
from ray.cluster_utils import Cluster

from sweeper import study as studies
from sweeper.orchestrate import run_sweep
from sweeper.space import load_space

SPACE = {
    "name": "packing",
    "objectives": [{"metric": "accuracy", "direction": "maximize"},
                   {"metric": "energy_j", "direction": "minimize"}],
    "sampler": {"name": "random", "seed": 0},
    "scenario": {"num_clients": 4, "rounds": 10, "cpus_per_trial": 1, "seed": 0},
    # One choice per leverage: every trial does the same work.
    "leverages": {"precision": {"choices": ["fp32"]}, "local_epochs": {"low": 1, "high": 1}},
}


def sweep_on(nodes: int, trials: int, workdir: Path) -> tuple[float, float]:
    """(sweep wall s, sum of trial wall s) on a fresh cluster of `nodes` 1-CPU nodes."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        space_file = workdir / f"packing-{nodes}.yaml"
        space_file.write_text(yaml.safe_dump({**SPACE, "budget": {"trials": trials,
                                                                  "parallel": nodes}}))
        space = load_space(space_file)
        started = time.perf_counter()
        outcome = run_sweep(space, workdir / f"store-{nodes}", dashboard=False)
        wall = time.perf_counter() - started
        results = [studies.stored_result(t) for t in outcome.study.trials]
        assert all(r is not None and r.status == "ok" for r in results)
        return wall, sum(r.wall_s for r in results)
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nodes in args.nodes:
            wall, busy = sweep_on(nodes, args.trials, Path(tmp))
            rows.append((nodes, wall, busy, busy / nodes, 3600 * args.trials / wall))
            print(rows[-1], flush=True)
    base = rows[0][4]
    section = "\n".join([
        "## Packing and scaling on a local Ray cluster",
        "",
        f"Command: `python benchmarks/packing_scaling.py --trials {args.trials} --nodes "
        f"{' '.join(map(str, args.nodes))}`. Machine: {machine()} ({os.cpu_count()} physical "
        "cores shared by every node). Each node: 1 CPU; each trial reserves 1 CPU "
        "(4 clients x 10 rounds, cnn_small: seconds, the scale of a real trial); the sweep "
        "runs as many trials as there are nodes. Ideal = sum of trial wall times / slots. "
        "Trial wall times grow when more nodes than physical cores share the machine, so "
        "the ideal is computed from the trials' own times in that run.",
        "",
        "| nodes (slots) | sweep wall (s) | sum of trial wall (s) | ideal (s) | wall / ideal "
        "| trials/hour | vs 1 node |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {n} | {w:.1f} | {b:.1f} | {i:.1f} | {w / i:.2f}x | {t:,.0f} | {t / base:.2f}x |"
          for n, w, b, i, t in rows],
        "",
    ])
    publish(section, args.write)


if __name__ == "__main__":
    main()
