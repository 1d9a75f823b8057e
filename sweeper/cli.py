"""The `sweeper` command: parse, call, print. Only here do errors become exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import warnings
from contextlib import suppress
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sweeper.errors import StoreError, SweeperError
from sweeper.interrupts import Interrupts, StopNow
from sweeper.store_errors import store_error, watch_stores

DEFAULT_STORE = Path("mlruns")


def quiet_third_party_warnings() -> None:
    """Warnings that tell a user nothing they can act on, printed on every run: Optuna's
    ExperimentalWarning for the features sweeper chose (TPE's `group`, ...) and Ray's
    FutureWarning about a GPU environment variable default it will change (no GPU here)."""
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message="Tip: In future versions of Ray, Ray will no longer "
                            "override accelerator visible devices")


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, metavar="DIR",
                        help=STORE_HELP)


def main(argv: list[str] | None = None) -> int:
    from g5k import G5kError

    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = ["sweeper", *(sys.argv[1:] if argv is None else argv)]  # for the record
    watch_stores()
    quiet_third_party_warnings()
    try:
        return args.func(args)
    except (SweeperError, G5kError) as exc:
        print(f"sweeper: error: {exc}", file=sys.stderr)
        return 2
    except StopNow as stop:  # SIGTERM, or Ctrl-C twice: the line was said (interrupts.py)
        return 128 + stop.signum
    except KeyboardInterrupt:  # before a sweep's own handling, or in another command
        print("sweeper: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a corrupt, locked, read-only or full store: one line
        error = store_error(exc, getattr(args, "store", None))
        if error is None:
            raise
        print(f"sweeper: error: {error}", file=sys.stderr)
        return 2


DESCRIPTION = """\
Map the energy / accuracy trade-offs of federated keyword spotting: sample leverages
(precision, update codecs, local work, ...) from a YAML search space, run each
configuration as a real Flower federation on Ray, and keep the Pareto front, with every
trial in MLflow and the study in Optuna (both in the store folder, ./mlruns by default)."""

EXAMPLES = """\
examples:
  sweeper pareto --space search_spaces/quick.yaml      # a 12-trial laptop sweep
  sweeper list                                         # the sweeps in ./mlruns
  sweeper report quick-20261124-101500                 # its fronts, hypervolume, importances
  sweeper ui                                           # browse the store (MLflow, Optuna)
  sweeper trial --space search_spaces/quick.yaml --set update_codec=int8 --json

`sweeper COMMAND --help` describes each command."""

PARETO_EXAMPLES = """\
examples:
  sweeper pareto --space search_spaces/quick.yaml
  sweeper pareto --space search_spaces/quick.yaml --name first-try --store runs/
  sweeper pareto --space search_spaces/quick.yaml --resume first-try --store runs/
  sweeper pareto --space search_spaces/full.yaml --ray-address 10.0.0.5:6379

Ctrl-C once lets the running trials finish, twice stops at once; either way the sweep
resumes with --resume NAME (the line to type is printed)."""

SPACE_HELP = "the search space, a YAML file (e.g. search_spaces/quick.yaml)"
STORE_HELP = "folder of the MLflow and Optuna stores (default: mlruns)"
SET_HELP = ("give a leverage this value (repeatable); leverages not given take the "
            "space's default")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweeper", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    pareto = sub.add_parser("pareto", help="run (or resume) a sweep and print its Pareto front",
                            description="Run a sweep of the search space (or resume one) "
                            "and print its Pareto front.", epilog=PARETO_EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    pareto.add_argument("--space", required=True, type=Path, metavar="FILE", help=SPACE_HELP)
    pareto.add_argument("--resume", metavar="SWEEP",
                        help="continue this sweep of the store (`sweeper list` names them)")
    pareto.add_argument("--name", help="name of a new sweep (default: <space name>-<time>)")
    _add_store(pareto)
    pareto.add_argument("--ray-address", metavar="HOST:PORT",
                        help="an existing Ray cluster (default: start one on 127.0.0.1)")
    pareto.add_argument("--cluster", action="store_true",
                        help="run on the Grid'5000 Ray cluster `sweeper cluster up` started "
                        "(its state in ~/.sweeper/g5k-cluster.json)")
    pareto.add_argument("--no-dashboard", action="store_true",
                        help="start Ray without its dashboard")
    pareto.set_defaults(func=_pareto)
    trial = sub.add_parser("trial", help="run one configuration and print its result",
                           description="Run one configuration of a space (or re-run a logged "
                           "trial) and print its result; it is logged to the store.")
    trial.add_argument("--space", type=Path, metavar="FILE",
                       help=SPACE_HELP + "; required unless --from-run")
    trial.add_argument("--from-run", metavar="RUN_ID",
                       help="re-run the trial logged in this MLflow run and compare")
    trial.add_argument("--set", action="append", default=[], metavar="LEVERAGE=VALUE",
                       help=SET_HELP)
    trial.add_argument("--json", action="store_true", help="print the TrialResult as JSON")
    trial.add_argument("--force", action="store_true",
                       help="run --set values outside the space (tagged outside the space)")
    _add_store(trial)
    trial.set_defaults(func=_trial)
    report = sub.add_parser("report", help="fronts, hypervolume and importances of a sweep",
                            description="Print a sweep's fronts, hypervolume and leverage "
                            "importances, and attach them to its MLflow run; at any moment "
                            "of the sweep or after.")
    report.add_argument("sweep", metavar="SWEEP",
                        help="the sweep's name (`sweeper list` names them)")
    _add_store(report)
    report.set_defaults(func=_report)
    listing = sub.add_parser("list", help="the sweeps in a store",
                             description="List the sweeps in a store, with their trials "
                             "counted by outcome.")
    _add_store(listing)
    listing.set_defaults(func=_list)
    from sweeper.ui import command as ui_command  # no torch, Ray or Flower: cheap for all

    ui = sub.add_parser("ui", help="browse a store: the MLflow UI and optuna-dashboard on "
                        "127.0.0.1 (URLs printed; Ctrl-C stops both)",
                        description="Start the MLflow UI and optuna-dashboard on a store, "
                        "bound to 127.0.0.1 on free ports; print both URLs; Ctrl-C stops "
                        "both.")
    _add_store(ui)
    ui.set_defaults(func=ui_command)
    baseline = sub.add_parser("baseline", help="train the space's model centrally (the ceiling)",
                              description="Train the space's model centrally on the pooled "
                              "data of all clients, priced on a trial's energy ledger: the "
                              "ceiling `pareto` and `report` compare the front with.")
    baseline.add_argument("--space", required=True, type=Path, metavar="FILE", help=SPACE_HELP)
    baseline.add_argument("--set", action="append", default=[], metavar="LEVERAGE=VALUE",
                          help=SET_HELP)
    baseline.add_argument("--epochs", type=int, default=20,
                          help="training epochs (default: 20)")
    _add_store(baseline)
    baseline.set_defaults(func=_baseline)
    cluster = sub.add_parser("cluster", help="Grid'5000: reserve nodes and run Ray on them",
                             description="Grid'5000: reserve nodes, run Ray on them, reach "
                             "its dashboard, give them back (see g5k/README.md).")
    cluster.add_argument("action", choices=("check", "up", "status", "forward", "down"),
                         help="check: try credentials, API, SSH, the nodes' env, wattmeters "
                         "and job types, reserving nothing; forward: serve the head's Ray "
                         "dashboard on a local port")
    cluster.add_argument("--g5k", type=Path, help="the cluster file (for check and up)")
    cluster.add_argument("--dry-run", action="store_true",
                         help="print every API call and SSH command; run nothing")
    cluster.add_argument("--local-port", type=int,
                         help="for forward (default: the cluster file's dashboard_port)")
    cluster.set_defaults(func=_cluster)
    return parser


def _pareto(args: argparse.Namespace) -> int:
    from sweeper.live import LiveView
    from sweeper.names import checked_name
    from sweeper.orchestrate import SweepProgress, new_sweep_name, run_sweep
    from sweeper.space import load_space
    from sweeper.tracking import Tracker

    space = load_space(args.space)
    if args.name:
        checked_name(args.name, "--name")
    node_energy = None
    if args.cluster:
        from g5k.cluster import ClusterState, node_energy_source, ray_client_env

        state = ClusterState.load()
        args.ray_address = state.ray_address()
        os.environ.update(ray_client_env())  # the cluster's token, by its file's path
        if space.scenario.isolation == "node":  # one trial per node: its joules are its own
            node_energy = node_energy_source(state)
    if args.resume and (args.store / "mlflow.db").exists():
        from sweeper.environment import sweep_environment

        tracker = Tracker(args.store)
        _say_changes(tracker.environment_changes(tracker.sweep_run(args.resume, create=False),
                                                 sweep_environment()), f"sweep {args.resume}")
    console = Console(stderr=True)
    sweep = args.resume or args.name or new_sweep_name(space)
    resume = f"resume: sweeper pareto --space {args.space} --resume {sweep} --store {args.store}"
    view = LiveView(space)
    with Interrupts(resume) as stop, Live(console=console, refresh_per_second=4,
                                          transient=False) as live:

        def show(progress: SweepProgress) -> None:
            view.update(progress)
            live.update(view)

        outcome = run_sweep(space, args.store, sweep=sweep,
                            resume=bool(args.resume), ray_address=args.ray_address,
                            dashboard=not args.no_dashboard, on_progress=show,
                            on_prepare=_corpus_progress(live), node_energy=node_energy,
                            command=args.argv, stop=stop)
    if not console.is_terminal:  # rich's last frame there ends without one
        console.line()
    if outcome.interrupted:  # Ctrl-C once: the running trials finished and are logged
        return stop.exit_code
    tracker = Tracker(args.store)
    _final_report(outcome, space, tracker, args.store)
    print(f"sweep: {outcome.sweep}")
    print(f"browse it: sweeper ui --store {args.store}   (MLflow UI and optuna-dashboard)")
    print(f"  or each: mlflow ui --backend-store-uri {tracker.uri}")
    print(f"           optuna-dashboard {_optuna_url(args.store)}")
    return 0


def _optuna_url(store: Path) -> str:
    from sweeper.study import storage_url

    return storage_url(store)


def _final_report(outcome, space, tracker, store: Path) -> None:
    """The report of a sweep whose trials are done, then its run FINISHED. A report that
    fails (e.g. a full disk) leaves the run FAILED, not RUNNING, every trial kept, and
    says how to write it later."""
    try:
        _show_report(outcome.study, space, tracker, outcome.parent_run_id, outcome.trial_runs)
    except Exception as exc:
        error = store_error(exc, store)
        with suppress(Exception):  # the store that failed may refuse this too
            tracker.report_failed(outcome.parent_run_id, str(error or repr(exc)))
        if error is None:
            raise
        raise StoreError(f"{error}; the trials are all kept: `sweeper report {outcome.sweep} "
                         f"--store {store}` writes the report once the store can be written"
                         ) from None
    tracker.finish_sweep(outcome.parent_run_id)


def _show_report(study, space, tracker, parent_run_id: str, trial_runs: dict[int, str]) -> None:
    """The fronts, hypervolume and importances: printed, and artifacts of the sweep's run."""
    from optuna.trial import TrialState

    from sweeper import study as studies
    from sweeper.baseline_compare import load_baseline
    from sweeper.config import TrialConfig
    from sweeper.environment import summary
    from sweeper.live import fmt
    from sweeper.report import (
        energy_cv_median,
        front_rows,
        front_table,
        publish,
        run_id_lines,
        varied_leverages,
    )

    scenario = TrialConfig(space.scenario).to_dict()["scenario"]
    baseline = load_baseline(tracker.uri, space.name, scenario)
    rows = front_rows(study, space, trial_runs, baseline)
    extras = publish(study, space, tracker, parent_run_id, rows, baseline)
    goals = ", ".join(f"{o.metric} {o.direction}" for o in space.objectives)
    out = Console(width=None if sys.stdout.isatty() else 200)
    repeats = (f"; means of {space.repeats} repeats ± 95% CI half-width"
               if space.repeats > 1 else "")
    out.print(front_table(rows, f"Pareto front of {study.study_name} ({goals}; feasible "
                                f"trials{repeats})"))
    for line in run_id_lines(rows):
        print(line)
    out.print(front_table(extras["round_front"], "Anytime front: every round of every "
                                                 "trial (accuracy then, energy so far)"))
    if baseline is not None:
        print(f"baseline: MLflow run {baseline.run_id} ({baseline.kind}), final accuracy "
              f"{baseline.accuracy_by_epoch[-1]:.4g} for {baseline.energy_j_by_epoch[-1]:.4g} J;"
              " energy_vs_baseline = a point's energy_j / the baseline's joules at its first "
              "epoch reaching that point's accuracy (NaN: never reached)")
    else:
        print("baseline: none with this scenario in the store's *-baselines experiments "
              f"(run `sweeper baseline --space {space.path}` to compare)")
    if space.repeats > 1:
        print(f"energy_j across repeats: median coefficient of variation "
              f"{energy_cv_median(study):.2%} (over configurations with 2+ ok repeats)")
    if extras["hypervolume"]:
        print(f"hypervolume after {len(extras['hypervolume'])} feasible trials: "
              f"{extras['hypervolume'][-1]['hypervolume']:.4g} (reference: the nadir pushed "
              "10% outward; history in hypervolume.csv)")
    for metric, ranking in extras["importances"].items():
        top = ", ".join(f"{k} {fmt(v)}" for k, v in list(ranking.items())[:4])
        print(f"importance for {metric}: {top or 'n/a'}")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    constant = [lev.name for lev in space.leverages
                if lev.name not in varied_leverages(complete)]
    if extras["importances"] and constant:
        print(f"no importance for {', '.join(constant)}: not varied across the complete trials")
    for trial in study.get_trials(deepcopy=False):  # results, but on no front
        if studies.outcome(trial) == "diverged":
            print(f"trial {trial.number} diverged: {trial.user_attrs.get('reason', '')}")
    for line in summary(tracker.recorded_environment(parent_run_id),
                        tracker.sweep_machines(parent_run_id)):
        print(line)


def _say_changes(changes: list[str] | None, recorded: str) -> None:
    """Before a re-run: how this environment differs from the one recorded with it."""
    if changes is None:
        print(f"environment: none recorded with {recorded}; not compared", file=sys.stderr)
    elif changes:
        print(f"environment: differs from {recorded}'s:", file=sys.stderr)
        for line in changes:
            print(f"  {line}", file=sys.stderr)
    else:
        print(f"environment: as recorded with {recorded}", file=sys.stderr)


def _report(args: argparse.Namespace) -> int:
    from sweeper import study as studies
    from sweeper.tracking import Tracker

    study = studies.load_existing(args.sweep, args.store)
    space = studies.space_of(study)
    tracker = Tracker(args.store)
    parent = tracker.sweep_run(args.sweep, create=False)
    _show_report(study, space, tracker, parent, tracker.logged_trials(parent))
    tracker.report_written(parent)
    from sweeper.artifact_store import missing

    note = missing(args.store)
    if note:
        print(note)
    return 0


def _list(args: argparse.Namespace) -> int:
    from sweeper import study as studies

    table = Table(title=f"sweeps in {args.store}")
    for column in ("sweep", *studies.OUTCOMES, "retried", "started"):
        table.add_column(column)
    for summary in studies.summaries(args.store):
        table.add_row(*(str(v) for v in summary))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
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

    if args.action in ("check", "up") and args.g5k is None:
        raise SweeperError(f"cluster {args.action}: --g5k FILE is required")
    if args.action == "check":
        from g5k import check

        return 0 if check.run(load_cluster(args.g5k), say=print) else 2
    if args.action == "up":
        cluster.up(load_cluster(args.g5k), dry_run=args.dry_run, say=print)
    elif args.action == "status":
        print(cluster.status(say=print))
    elif args.action == "forward":
        forward = cluster.open_forward(args.local_port)
        print(f"Ray dashboard: http://127.0.0.1:{forward.port} (via {forward.label}); "
              "Ctrl-C to stop")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            forward.close()
    else:
        cluster.down(dry_run=args.dry_run, say=print)
    return 0


def _configured(args: argparse.Namespace):
    """The space, the trial configuration its defaults and `--set` values give, and why
    they lie outside the space (with --force; else such values are refused)."""
    from sweeper.space import load_space
    from sweeper.trial import prepare

    space = load_space(args.space)
    overrides: dict[str, str] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SweeperError(f"--set {item}: expected LEVERAGE=VALUE")
        overrides[name.strip()] = value.strip()
    values = space.with_overrides(overrides, force=getattr(args, "force", False))
    config = space.trial_config(values)
    with Live(console=Console(stderr=True), transient=True) as live:
        prepare(config.scenario, config.seed, _corpus_progress(live))
    return space, config, space.outside(values)


def _baseline(args: argparse.Namespace) -> int:
    from sweeper.baseline import run_baseline
    from sweeper.tracking import Tracker

    space, config, _ = _configured(args)
    result = run_baseline(config, args.epochs)
    tracker = Tracker(args.store)
    run_id = tracker.log_baseline(f"{space.name}-baselines", config, result)
    model = result.model
    print(f"centralized {model['name']} ({model['parameters']:,} parameters, "
          f"{model['flops_per_example']:,} FLOPs/example) on {result.examples} pooled "
          f"training examples, {args.epochs} epochs: test accuracy {result.accuracy:.4f} "
          f"(best {max(result.accuracy_by_epoch, default=float('nan')):.4f}) in "
          f"{result.wall_s:.1f} s")
    kinds = sorted({info.kind for info in result.meters.values()})
    print(f"energy {result.energy_j:.4g} J ({' + '.join(kinds)}; compute only, no "
          "communication):")
    final = result.epochs[-1].energy if result.epochs else {}
    for component, info in result.meters.items():
        print(f"  {component} {final.get(component, float('nan')):.4g} J, {info.kind}: "
              f"{info.meter}")
    print(f"MLflow run {run_id} in {tracker.uri}")
    return 0


def _from_run(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from sweeper.environment import machine, set_by_trial, sweep_environment
    from sweeper.result import strict_json
    from sweeper.tracking import Tracker, tracking_uri, trial_config_of_run
    from sweeper.trial import prepare, run_trial

    uri = tracking_uri(args.store)
    config = trial_config_of_run(args.from_run, uri)
    old = MlflowClient(uri).get_run(args.from_run).data.metrics
    here = {k: v for k, v in {**sweep_environment(), **machine()}.items()
            if k not in set_by_trial(config.leverages)}
    elsewhere = Tracker(args.store).environment_changes(args.from_run, here)
    _say_changes(elsewhere, f"run {args.from_run}")
    prepare(config.scenario, config.seed)
    new = run_trial(config)
    new.info["ran_elsewhere"] = elsewhere or []
    rows = {"accuracy": new.accuracy, "energy_j": new.energy_j, "bytes_total": new.bytes_total,
            "wall_s": new.wall_s, "warmup_cpu_s": new.info.get("warmup_cpu_s", float("nan"))}
    logged = {k: old.get(f"final.{k}", float("nan")) for k in rows}
    change = {k: (rows[k] - logged[k]) / logged[k] if logged[k] else float("nan") for k in rows}
    if args.json:
        print(json.dumps(strict_json({"old": logged, "new": rows, "relative_change": change,
                                      "ran_elsewhere": new.info["ran_elsewhere"],
                                      "status": new.status, "reason": new.reason})))
        return 0 if new.status == "ok" else 1
    table = Table(title=f"trial of MLflow run {args.from_run}, re-run (seed {config.seed})")
    for column in ("metric", "logged", "re-run", "difference"):
        table.add_column(column)
    for key, value in rows.items():
        table.add_row(key, f"{logged[key]:.6g}", f"{value:.6g}", f"{change[key]:+.1%}")
    Console().print(table)
    if new.status != "ok":
        print(f"re-run {new.status}: {new.reason}", file=sys.stderr)
    return 0 if new.status == "ok" else 1


def _trial(args: argparse.Namespace) -> int:
    from sweeper.result import OUTSIDE_SPACE, strict_json
    from sweeper.tracking import Tracker
    from sweeper.trial import run_trial

    if args.from_run:
        return _from_run(args)
    if args.space is None:
        raise SweeperError("trial: --space FILE (or --from-run RUN_ID) is required")
    space, config, outside = _configured(args)
    result = run_trial(config)
    if outside:  # --force: not a point of the space
        result.info[OUTSIDE_SPACE] = outside
    tracker = Tracker(args.store)
    parent = tracker.sweep_run(f"{space.name}-single-trials", create=True, space=space)
    run_id = tracker.log_trial(parent, len(tracker.logged_trials(parent)), config, result)
    tracker.log_environment(run_id, args.argv)
    if args.json:
        print(json.dumps(strict_json({"mlflow_run_id": run_id, "config": config.to_dict(),
                                      "result": result.to_dict()}), indent=2))
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
