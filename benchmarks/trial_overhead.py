"""What a federated trial costs beyond its training: sweeper's Flower trial vs a plain loop.

    python benchmarks/trial_overhead.py [--clients 4 32] [--rounds 5] [--repeats 3]
        [--write BENCHMARKS.md] [--profile]

Both sides do the same work on the same data: `rounds` rounds in which every client trains
one local epoch from the global model (same model, optimizer, batch order, seeds), the
updates are averaged by example count, and the global model is evaluated on the test split.
The plain loop calls `kws.train` directly; the trial goes through `run_trial` (Flower's
runtime, messages, codec and byte accounting, energy ledger). Same process, measured side
by side (alternating, median of `--repeats` each), after one warm-up of each; iid
partition so 32 clients exist.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _markdown import machine, publish

from sweeper.config import Scenario, TrialConfig, resolve_leverages
from sweeper.kws.dataset import client_split
from sweeper.kws.task import new_model, trial_data
from sweeper.kws.train import evaluate, train
from sweeper.trial import prepare, run_trial


def config_for(clients: int, rounds: int, client_eval: bool) -> TrialConfig:
    scenario = Scenario(num_clients=clients, partition="iid", rounds=rounds,
                        client_eval=client_eval)
    return TrialConfig(scenario, resolve_leverages({}, scenario), 0)


def plain_loop(config: TrialConfig) -> tuple[float, float]:
    """The same federated training without Flower; returns (wall s, final accuracy)."""
    started = time.perf_counter()
    data = trial_data(config)
    test = data.indices("test")
    lev = config.leverages
    model = new_model(config)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    accuracy = float("nan")
    for server_round in range(1, config.scenario.rounds + 1):
        total, summed = 0, None
        for pid in range(config.scenario.num_clients):
            model.load_state_dict(global_state)
            index, held_out = client_split(config.scenario, config.seed, pid)
            if config.scenario.client_eval and server_round > 1:  # the trial's evaluate step
                evaluate(model, data.x[held_out], data.y[held_out])
            train(model, data.x[index], data.y[index], epochs=int(lev["local_epochs"]),
                  batch_size=int(lev["batch_size"]), lr=float(lev["lr"]),
                  precision=str(lev["precision"]),
                  seed=config.seed * 1_000_003 + server_round * 1009 + pid)
            weight = len(index)
            state = model.state_dict()
            summed = ({k: v * weight for k, v in state.items()} if summed is None
                      else {k: summed[k] + v * weight for k, v in state.items()})
            total += weight
        global_state = {k: v / total for k, v in summed.items()}
        model.load_state_dict(global_state)
        accuracy = evaluate(model, data.x[test], data.y[test])[1]
    return time.perf_counter() - started, accuracy


def federated(config: TrialConfig) -> tuple[float, float]:
    started = time.perf_counter()
    result = run_trial(config)
    assert result.status == "ok", result.reason
    return time.perf_counter() - started, result.accuracy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=Path)
    parser.add_argument("--profile", action="store_true", help="pyinstrument the trial")
    parser.add_argument("--no-client-eval", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for clients in args.clients:
        config = config_for(clients, args.rounds, not args.no_client_eval)
        prepare(config.scenario, config.seed)
        plain_loop(config), federated(config)  # warm-up: caches, lazy imports
        runs = [(plain_loop(config), federated(config)) for _ in range(args.repeats)]
        plain_s = statistics.median(plain[0] for plain, _ in runs)
        fed_s = statistics.median(fed[0] for _, fed in runs)
        plain_acc, fed_acc = runs[0][0][1], runs[0][1][1]
        assert all(fed[1] == fed_acc for _, fed in runs), "a trial did not repeat exactly"
        rows.append((clients, plain_s, fed_s, fed_s / plain_s, plain_acc, fed_acc))
        print(rows[-1], flush=True)
        if args.profile:
            from pyinstrument import Profiler

            with Profiler(interval=0.001) as profiler:
                federated(config)
            print(profiler.output_text(unicode=False, color=False, show_all=False))
    clients_arg = " ".join(map(str, args.clients))
    section = "\n".join([
        "## Trial overhead: Flower trial vs plain loop",
        "",
        f"Command: `python benchmarks/trial_overhead.py --clients {clients_arg} "
        f"--rounds {args.rounds} --repeats {args.repeats}`. Machine: {machine()}; 1 torch "
        "thread (a trial's reservation "
        "is 1 CPU). Work: cnn_small, 10 MFCC x 51, 1 local epoch per round, every client every "
        "round, iid partition of the synthetic corpus, test evaluation each round. Times: "
        "median of the repeats, the two sides alternating in one process.",
        "",
        "| clients | plain loop (s) | sweeper trial (s) | ratio | accuracy plain / trial |",
        "|---:|---:|---:|---:|---|",
        *[f"| {c} | {p:.2f} | {f:.2f} | {r:.2f}x | {pa:.4f} / {fa:.4f} |"
          for c, p, f, r, pa, fa in rows],
        "",
    ])
    publish(section, args.write)


if __name__ == "__main__":
    main()
