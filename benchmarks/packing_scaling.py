"""Trial packing and node scaling of a sweep on a local multi-node Ray cluster.

    python benchmarks/packing_scaling.py [--trials 16] [--nodes 1 2 3] [--node-cpus 0.4]
                                         [--write BENCHMARKS.md]

For each node count N, a `ray.cluster_utils.Cluster` of N nodes with 1 logical CPU each
runs the same sweep of `--trials` identical-work trials with `parallel: auto`
(cpus_per_trial = 1, so floor(N / 1) = N run at a time). Each node's raylet, and so every
worker it starts, is held to `--node-cpus` physical CPUs by a cgroup CPU quota: the node's
own CPU share, as on a machine of its own. The default leaves 40% of the machine to what
a real cluster runs elsewhere (the driver, Ray's GCS, MLflow) at the largest node count.
Packing: sweep wall time vs the ideal, sum(trial wall times) / slots. Scaling: trials per
hour against the 1-node figure. Needs root (cgroup writes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray
import yaml
from _cpushare import CpuShare
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


def sweep_on(nodes: int, node_cpus: float, trials: int, workdir: Path) -> tuple[float, float]:
    """(sweep wall s, sum of trial wall s) on a fresh cluster of `nodes` 1-CPU nodes, each
    held to `node_cpus` physical CPUs."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    members = [cluster.head_node] + [cluster.add_node(num_cpus=1) for _ in range(nodes - 1)]
    cluster.wait_for_nodes()
    shares = []
    for index, node in enumerate(members):
        shares.append(CpuShare(f"sweeper-bench-node{index}", node_cpus))
        shares[-1].adopt(node.all_processes["raylet"][0].process.pid)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == nodes
        space_file = workdir / f"packing-{nodes}.yaml"
        space_file.write_text(yaml.safe_dump({**SPACE, "budget": {"trials": trials,
                                                                  "parallel": "auto"}}))
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
        for share in shares:
            share.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--node-cpus", type=float,
                        help="physical CPUs per node (default: 0.6 x cores / max nodes)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    node_cpus = args.node_cpus or round(0.6 * os.cpu_count() / max(args.nodes), 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nodes in args.nodes:
            wall, busy = sweep_on(nodes, node_cpus, args.trials, Path(tmp))
            waves = -(-args.trials // nodes)  # identical trials: the last wave may be partial
            rows.append((nodes, wall, busy, busy / nodes, waves * busy / args.trials,
                         3600 * args.trials / wall))
            print(rows[-1], flush=True)
    base = rows[0][-1]
    section = "\n".join([
        f"## Packing and scaling on a local Ray cluster ({args.trials} trials)",
        "",
        f"Command: `sudo python benchmarks/packing_scaling.py --trials {args.trials} --nodes "
        f"{' '.join(map(str, args.nodes))} --node-cpus {node_cpus:g}`. Machine: {machine()}. "
        f"Each node: 1 logical CPU for Ray, held to {node_cpus:g} physical CPU by a cgroup "
        "CPU quota on its raylet and every worker it starts (its own CPU share, as a "
        "machine of its own would have); the driver, Ray's GCS and MLflow run outside the "
        "quotas. Each trial reserves 1 CPU (4 clients x 10 rounds, cnn_small: seconds, the "
        "scale of a real trial); `parallel: auto` runs floor(cluster CPUs / 1) = nodes "
        "trials at a time. Ideal = sum of the trials' own wall times in that run / slots; "
        "wave bound = ceil(trials / slots) x mean trial time, the best any scheduler can "
        "do with identical trials when the slots do not divide the trial count.",
        "",
        "| nodes (slots) | sweep wall (s) | sum of trial wall (s) | ideal (s) | wall / ideal "
        "| wave bound (s) | wall / bound | trials/hour | vs 1 node |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {n} | {w:.1f} | {b:.1f} | {i:.1f} | {w / i:.2f}x | {wb:.1f} | {w / wb:.2f}x "
          f"| {t:,.0f} | {t / base:.2f}x |" for n, w, b, i, wb, t in rows],
        "",
    ])
    publish(section, args.write)


if __name__ == "__main__":
    main()
