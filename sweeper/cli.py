"""The `sweeper` command: parse, call, print. Only here do errors become exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sweeper.errors import SweeperError

DEFAULT_STORE = Path("mlruns")


def main(argv: list[str] | None = None) -> int:
    from g5k import G5kError

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (SweeperError, G5kError) as exc:
        print(f"sweeper: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweeper", description=__doc__)
    sub = parser.add_subparsers(required=True)
    pareto = sub.add_parser("pareto", help="run (or resume) a sweep and print its Pareto front")
    pareto.add_argument("--space", required=True, type=Path)
    pareto.add_argument("--resume", metavar="SWEEP", help="continue this sweep")
    pareto.add_argument("--name", help="name of a new sweep (default: <space name>-<time>)")
    pareto.add_argument("--store", type=Path, default=DEFAULT_STORE,
                        help="folder of the MLflow and Optuna stores (default: mlruns)")
    pareto.add_argument("--ray-address", help="an existing Ray cluster (default: start one)")
    pareto.add_argument("--cluster", type=Path, metavar="G5K_FILE",
                        help="run on the Ray cluster `sweeper cluster up` started")
    pareto.add_argument("--no-dashboard", action="store_true", help="start Ray without it")
    pareto.set_defaults(func=_pareto)
    trial = sub.add_parser("trial", help="run one configuration and print its result")
    trial.add_argument("--space", required=True, type=Path)
    trial.add_argument("--set", action="append", default=[], metavar="LEVERAGE=VALUE")
    trial.add_argument("--json", action="store_true", help="print the TrialResult as JSON")
    trial.add_argument("--store", type=Path, default=DEFAULT_STORE)
    trial.set_defaults(func=_trial)
    baseline = sub.add_parser("baseline", help="train the space's model centrally (the ceiling)")
    baseline.add_argument("--space", required=True, type=Path)
    baseline.add_argument("--set", action="append", default=[], metavar="LEVERAGE=VALUE")
    baseline.add_argument("--epochs", type=int, default=20)
    baseline.add_argument("--store", type=Path, default=DEFAULT_STORE)
    baseline.set_defaults(func=_baseline)
    cluster = sub.add_parser("cluster", help="Grid'5000: reserve nodes and run Ray on them")
    cluster.add_argument("action", choices=("up", "status", "down"))
    cluster.add_argument("--g5k", type=Path, help="the cluster file (for up)")
    cluster.add_argument("--dry-run", action="store_true",
                         help="print every API call and SSH command; run nothing")
    cluster.set_defaults(func=_cluster)
    return parser


def _pareto(args: argparse.Namespace) -> int:
    from sweeper.orchestrate import SweepProgress, run_sweep
    from sweeper.report import front_rows, front_table, publish
    from sweeper.space import load_space
    from sweeper.tracking import Tracker

    space = load_space(args.space)
    if args.cluster is not None:
        from g5k.cluster import ClusterState

        args.ray_address = ClusterState.load().ray_address()
    console = Console(stderr=True)
    with Live(console=console, refresh_per_second=4, transient=False) as live:

        def show(progress: SweepProgress) -> None:
            live.update(_progress_view(progress, space))

        outcome = run_sweep(space, args.store, sweep=args.resume or args.name,
                            resume=bool(args.resume), ray_address=args.ray_address,
                            dashboard=not args.no_dashboard, on_progress=show,
                            on_prepare=_corpus_progress(live))
    tracker = Tracker(args.store)
    rows = front_rows(outcome.study, space, outcome.trial_runs)
    publish(outcome.study, space, tracker, outcome.parent_run_id, rows)
    tracker.finish_sweep(outcome.parent_run_id)
    goals = ", ".join(f"{o.metric} {o.direction}" for o in space.objectives)
    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(front_table(rows, f"Pareto front of {outcome.sweep} ({goals})"))
    print(f"sweep: {outcome.sweep}   MLflow: mlflow ui --backend-store-uri {tracker.uri}")
    return 0


def _corpus_progress(live: Live):
    """A progress bar for the one-time synthesis of the speech corpus."""
    from rich.progress import Progress

    bar = Progress(console=live.console)
    task = bar.add_task("synthesizing the speech corpus (once, then cached)", total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        live.update(bar)

    return update


def _cluster(args: argparse.Namespace) -> int:
    from g5k import cluster
    from g5k.config import load_cluster

    if args.action == "up":
        if args.g5k is None:
            raise SweeperError("cluster up: --g5k FILE is required")
        cluster.up(load_cluster(args.g5k), dry_run=args.dry_run, say=print)
    elif args.action == "status":
        print(cluster.status(say=print))
    else:
        cluster.down(dry_run=args.dry_run, say=print)
    return 0


def _progress_view(progress, space) -> Table:
    table = Table(title=f"{progress.sweep}: {progress.done}/{progress.budget} done, "
                        f"{len(progress.running)} running, {progress.failed} failed",
                  caption=(f"Ray dashboard: {progress.dashboard_url}   " if
                           progress.dashboard_url else "") + progress.last_event)
    metrics = [o.metric for o in space.objectives]
    table.add_column("front: trial")
    for lev in space.leverages:
        table.add_column(lev.name)
    for metric in metrics:
        table.add_column(metric)
    for trial in sorted(progress.front, key=lambda t: t.number):
        table.add_row(str(trial.number), *(str(trial.params.get(lev.name, ""))
                                           for lev in space.leverages),
                      *(f"{v:.4g}" for v in trial.values))
    return table


def _configured(args: argparse.Namespace):
    """The space and the trial configuration its defaults and `--set` values give."""
    from sweeper.space import load_space
    from sweeper.trial import prepare

    space = load_space(args.space)
    overrides: dict[str, str] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SweeperError(f"--set {item}: expected LEVERAGE=VALUE")
        overrides[name.strip()] = value.strip()
    config = space.trial_config(space.with_overrides(overrides))
    with Live(console=Console(stderr=True), transient=True) as live:
        prepare(config.scenario, config.seed, _corpus_progress(live))
    return space, config


def _baseline(args: argparse.Namespace) -> int:
    from sweeper.baseline import run_baseline
    from sweeper.tracking import Tracker

    space, config = _configured(args)
    result = run_baseline(config, args.epochs)
    tracker = Tracker(args.store)
    run_id = tracker.log_baseline(f"{space.name}-baselines", config, result)
    model = result.model
    print(f"centralized {model['name']} ({model['parameters']:,} parameters, "
          f"{model['flops_per_example']:,} FLOPs/example) on {result.examples} pooled "
          f"training examples, {args.epochs} epochs: test accuracy {result.accuracy:.4f} "
          f"(best {max(result.accuracy_by_epoch, default=float('nan')):.4f}) in "
          f"{result.wall_s:.1f} s")
    print(f"MLflow run {run_id} in {tracker.uri}")
    return 0


def _trial(args: argparse.Namespace) -> int:
    from sweeper.tracking import Tracker
    from sweeper.trial import run_trial

    space, config = _configured(args)
    result = run_trial(config)
    tracker = Tracker(args.store)
    parent = tracker.sweep_run(f"{space.name}-single-trials", create=True)
    run_id = tracker.log_trial(parent, len(tracker.logged_trials(parent)), config, result)
    if args.json:
        print(json.dumps({"mlflow_run_id": run_id, "config": config.to_dict(),
                          "result": result.to_dict()}, indent=2))
    else:
        console = Console()
        console.print(f"trial {result.status}{': ' + result.reason if result.reason else ''}")
        console.print({k: getattr(result, k) for k in ("accuracy", "energy_j", "wall_s",
                                                       "bytes_total")})
        console.print({k: f"{v.kind}: {v.meter}" for k, v in result.meters.items()})
        console.print(f"MLflow run {run_id} in {tracker.uri}")
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
