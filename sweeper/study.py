"""The Optuna study of a sweep: sampler, persistent storage, objectives and Pareto front."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import StoreError
from sweeper.names import file_safe
from sweeper.result import TrialResult
from sweeper.samplers import new_sampler
from sweeper.space import SearchSpace
from sweeper.store_lock import store_lock

# A trial's results are Optuna *system* attrs (optuna-dashboard shows only user attrs: a
# 4.6 KB JSON per trial made its pages unreadable); stores written before kept them as
# user attrs under the same keys, and are still read (`_raw`).
RESULT_ATTR = "result"
INTERRUPTED_ATTR = "interrupted"
SPACE_ATTR = "space_yaml"
STATUS_ATTR = "status"  # "ok", "pruned", "failed", "diverged" (or "duplicate")
RUN_ID_ATTR = "mlflow_run_id"  # the child run of the configuration's first repeat
RUN_PATH_ATTR = "mlflow_run"  # its page in the MLflow UI, a path on the UI's address


def storage_url(store: Path) -> str:
    return f"sqlite:///{Path(store).resolve() / 'optuna.db'}"


STORE_WAIT_S = 20  # a write waits this long for another process's lock (as MLflow's does)


def storage(store: Path) -> optuna.storages.RDBStorage:
    """The store's Optuna storage, its schema made or checked under the store's lock; one
    per store file and process (checking the schema loads Alembic's scripts: ~0.5 s)."""
    folder = Path(store).resolve()
    try:  # a file deleted and made again is another store
        info = (folder / "optuna.db").stat()
        identity: tuple[int, int] | None = (info.st_dev, info.st_ino)
    except FileNotFoundError:
        identity = None
    return _storage(folder, identity)


@lru_cache(maxsize=32)
def _storage(store: Path, identity: tuple[int, int] | None) -> optuna.storages.RDBStorage:
    with store_lock(store):
        return optuna.storages.RDBStorage(
            storage_url(store), engine_kwargs={"connect_args": {"timeout": STORE_WAIT_S}})


@contextmanager
def discarded_on_failure(sweep: str, store: Path, created: bool) -> Iterator[None]:
    """A sweep `created` just now whose start then fails is removed (it has no trial):
    `sweeper list` does not show it."""
    try:
        yield
    except BaseException:
        if created:
            with suppress(Exception):  # a store that failed may refuse this too
                optuna.delete_study(study_name=sweep, storage=storage(store))
        raise


def make_sampler(space: SearchSpace, done: int = 0) -> optuna.samplers.BaseSampler:
    """The space's sampler. A resumed sweep's is seeded `sampler.seed + done` (the trials
    the study holds): seeded as before, it would propose the first driver's trials again."""
    return new_sampler(space, space.sampler_seed + done)


def open_study(space: SearchSpace, sweep: str, store: Path, create: bool) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(store)
    directions = [o.direction for o in space.objectives]
    if not create:
        try:
            study = optuna.load_study(study_name=sweep, storage=existing_storage(sweep, store),
                                      sampler=make_sampler(space))
        except KeyError:
            raise unknown_sweep(sweep, url, store) from None
        if [d.name.lower() for d in study.directions] != directions:
            raise StoreError(f"sweep {sweep!r} has other objectives than {space.path}")
        study.sampler = make_sampler(space, len(study.get_trials(deepcopy=False)))
        if study.metric_names is None:  # a sweep started before they were named
            _name_metrics(study, space)
        return study
    study = optuna.create_study(study_name=sweep, storage=storage(store),
                                directions=directions, sampler=make_sampler(space))
    with discarded_on_failure(sweep, store, created=True):
        study.set_user_attr(SPACE_ATTR, Path(space.path).read_text())
        study.set_user_attr("objectives", [o.metric for o in space.objectives])
        _name_metrics(study, space)
    return study


def _name_metrics(study: optuna.Study, space: SearchSpace) -> None:
    """optuna-dashboard's objective names (else "Objective 0/1")."""
    with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5.1
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in space.objectives])


def note_run(study: optuna.Study, number: int, run_id: str, page: str) -> None:
    """Put the MLflow child run of a configuration's first repeat on its Optuna trial (id,
    and `page`, its path in the MLflow UI). The trial is usually told already (Optuna is told before
    MLflow is written, see DESIGN.md), and Optuna refuses attrs on a finished trial, so the
    row is written to the storage's table directly; an earlier value is replaced."""
    from optuna.storages._rdb.models import TrialUserAttributeModel
    from sqlalchemy.dialects.sqlite import insert

    backend = getattr(study._storage, "_backend", study._storage)  # under _CachedStorage
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    attrs = {RUN_ID_ATTR: run_id, RUN_PATH_ATTR: page}
    with backend.engine.begin() as connection:
        for key, value in attrs.items():
            row = insert(TrialUserAttributeModel).values(trial_id=trial_id, key=key,
                                                         value_json=json.dumps(value))
            connection.execute(row.on_conflict_do_update(
                index_elements=["trial_id", "key"], set_={"value_json": row.excluded.value_json}))
    cached = study._storage.get_trial(trial_id)  # this process's copy of a finished trial
    cached.user_attrs.update(attrs)


def is_finished(trial: FrozenTrial) -> bool:
    """Counts toward the budget: complete, failed or pruned, but not cut off by a kill."""
    if trial.user_attrs.get(INTERRUPTED_ATTR) or DUPLICATE_ATTR in trial.user_attrs:
        return False
    return trial.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


REPEAT_ATTR = "repeat."  # + repeat index: each finished repeat's result, as it finishes
TARGET_CONSTRAINT = "energy_to_accuracy_j: target_accuracy reached"


def _raw(trial: FrozenTrial) -> dict[str, str]:
    """The trial's stored results by key (RESULT_ATTR, REPEAT_ATTR + r): system attrs,
    or user attrs in a store written before they moved."""
    return {key: raw for attrs in (trial.user_attrs, trial.system_attrs)
            for key, raw in attrs.items()
            if key == RESULT_ATTR or key.startswith(REPEAT_ATTR)}


def stored_result(trial: FrozenTrial) -> TrialResult | None:
    """The configuration's result: the aggregate of its repeats, or its only repeat."""
    raw = _raw(trial)
    text = raw.get(RESULT_ATTR) or raw.get(f"{REPEAT_ATTR}0")
    return TrialResult.from_dict(json.loads(text)) if text else None


def stored_repeats(trial: FrozenTrial) -> dict[int, TrialResult]:
    """Repeat index -> result of every repeat of the configuration finished so far."""
    raw = _raw(trial)
    out = {int(key[len(REPEAT_ATTR):]): TrialResult.from_dict(json.loads(text))
           for key, text in raw.items() if key.startswith(REPEAT_ATTR)}
    if not out and RESULT_ATTR in raw:  # a store from before repeats
        out[0] = TrialResult.from_dict(json.loads(raw[RESULT_ATTR]))
    return dict(sorted(out.items()))


def _keep(trial: optuna.Trial, key: str, result: TrialResult) -> None:
    trial.storage.set_trial_system_attr(trial._trial_id, key, json.dumps(result.to_dict()))


def store_repeat(trial: optuna.Trial, repeat: int, result: TrialResult) -> None:
    """Keep a finished repeat with its configuration, before anything else is written."""
    _keep(trial, f"{REPEAT_ATTR}{repeat}", result)


def tell(study: optuna.Study, trial: optuna.Trial, space: SearchSpace,
         result: TrialResult) -> None:
    """Record a finished configuration: values for an ok result, FAIL otherwise. The whole
    result (rounds, meters, reason) is kept with it (in repeat 0's attribute when there is
    one repeat), so MLflow can be re-logged from Optuna alone."""
    if result.repeats > 1:
        _keep(trial, RESULT_ATTR, result)
    trial.set_user_attr(STATUS_ATTR, result.status)
    if result.reason:
        trial.set_user_attr("reason", result.reason)
    if result.status == "ok":
        missing = [o.metric for o in space.objectives if o.metric != "energy_to_accuracy_j"
                   and math.isnan(result.objective(o.metric))]
        if missing:  # no number stands in for missing data: the point cannot be placed
            note = result.info.get("node_energy", {}).get("reason", "no value")
            trial.set_user_attr(STATUS_ATTR, "failed")
            trial.set_user_attr("reason", f"objective {', '.join(missing)} is NaN: {note}")
            study.tell(trial, state=TrialState.FAIL)
            return
        for constraint in space.constraints:
            trial.set_constraint(str(constraint), _violation(constraint, result))
        if space.target_accuracy is not None:
            trial.set_constraint(TARGET_CONSTRAINT, _target_gap(result, space.target_accuracy))
        study.tell(trial, [_told(result, o.metric) for o in space.objectives])
    elif result.status == "pruned":
        trial.set_user_attr("pruned_after_round", len(result.rounds))
        study.tell(trial, state=TrialState.PRUNED)
    else:  # failed, or diverged (a result, not a crash: its status and reason say which)
        study.tell(trial, state=TrialState.FAIL)


def _told(result: TrialResult, metric: str) -> float:
    """The value Optuna gets: energy to a target never reached is +inf (Optuna refuses
    NaN), and the trial is infeasible through its target constraint."""
    value = result.objective(metric)
    return math.inf if metric == "energy_to_accuracy_j" and math.isnan(value) else value


def _target_gap(result: TrialResult, target: float) -> float:
    """0 when the target was reached (by every repeat), else how far the best round fell
    short (at least a hair above 0: one repeat short makes the configuration infeasible)."""
    if not math.isnan(result.energy_to_accuracy_j):
        return 0.0
    gap = target - max((r.accuracy for r in result.rounds), default=0.0)
    return 1.0 if math.isnan(gap) else max(gap, 1e-9)


def _violation(constraint, result: TrialResult) -> float:
    value = result.objective(constraint.metric)
    return math.inf if math.isnan(value) else constraint.violation(value)


def running_trials(study: optuna.Study) -> list[tuple[optuna.Trial, FrozenTrial]]:
    """Configurations left RUNNING by a driver that stopped, as live trials (to tell) with
    what they hold: the resumed driver takes them over under their own numbers, keeping
    the repeats they finished."""
    out = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        live = optuna.Trial(study, frozen._trial_id)
        if frozen.user_attrs.get(INTERRUPTED_ATTR):  # taken over: running again
            live.set_user_attr(INTERRUPTED_ATTR, False)
        out.append((live, frozen))
    return out


INTERRUPTIONS_ATTR = "interruptions"  # how many drivers stopped while it ran


def mark_interrupted(trials: list[optuna.Trial]) -> None:
    """Configurations a stopping driver leaves unfinished: `sweeper list` counts them as
    interrupted until a resumed driver takes them over (`running_trials`)."""
    for trial in trials:
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        trial.set_user_attr(INTERRUPTIONS_ATTR, trial.user_attrs.get(INTERRUPTIONS_ATTR, 0) + 1)


DUPLICATE_ATTR = "duplicate_of"  # a proposal skipped: that trial ran these parameters
ASK_TRIES = 50


def ask_new(study: optuna.Study, space: SearchSpace,
            tries: int = ASK_TRIES) -> tuple[optuna.Trial, dict] | None:
    """A trial with parameters no finished or running configuration has (None after
    `tries` proposals that all had: a small space is exhausted). A duplicate proposal is
    told FAIL with `duplicate_of`: it counts nowhere (not finished, not listed)."""
    seen = {tuple(sorted(t.params.items())): t.number
            for t in study.get_trials(deepcopy=False)
            if is_finished(t) or t.state == TrialState.RUNNING}
    for _ in range(tries):
        trial = study.ask()
        sampled = space.sample(trial)
        key = tuple(sorted(trial.params.items()))
        if key not in seen:
            return trial, sampled
        trial.set_user_attr(DUPLICATE_ATTR, seen[key])
        trial.set_user_attr(STATUS_ATTR, "duplicate")
        study.tell(trial, state=TrialState.FAIL)
    return None


CONSTRAINT_PREFIX = "constraints:"


def is_feasible(trial: FrozenTrial) -> bool:
    """Every constraint set on the trial is met (value <= 0); true when there are none."""
    return all(v <= 0 for k, v in trial.system_attrs.items()
               if k.startswith(CONSTRAINT_PREFIX))


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated complete trials among the feasible ones."""
    return [t for t in study.best_trials if is_feasible(t)]


def existing_storage(sweep: str, store: Path) -> optuna.storages.RDBStorage:
    """The store's Optuna storage, refused (not created: SQLite would make an empty file)
    when the store has no optuna.db."""
    if not (Path(store) / "optuna.db").is_file():
        raise unknown_sweep(sweep, f"{store} (no optuna.db there)", store)
    return storage(store)


def load_existing(sweep: str, store: Path) -> optuna.Study:
    try:
        return optuna.load_study(study_name=sweep, storage=existing_storage(sweep, store))
    except KeyError:
        raise unknown_sweep(sweep, storage_url(store), store) from None


def unknown_sweep(sweep: str, where: str, store: Path) -> StoreError:
    """The error for a sweep name the store does not hold, saying where to find names."""
    return StoreError(f"no sweep named {sweep!r} in {where}; `sweeper list --store {store}` "
                      "lists the sweeps there")


def space_of(study: optuna.Study) -> SearchSpace:
    """The search space a sweep was started with (kept in the study)."""
    import tempfile

    from sweeper.space import load_space

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{file_safe(study.study_name)}.yaml"
        path.write_text(study.user_attrs[SPACE_ATTR])
        return load_space(path)


OUTCOMES = ("complete", "failed", "diverged", "interrupted", "pruned", "running")


def outcome(trial: FrozenTrial) -> str:
    """What a trial counts as in `sweeper list` (one of OUTCOMES, or "waiting")."""
    if trial.user_attrs.get(INTERRUPTED_ATTR):
        return "interrupted"
    if trial.state == TrialState.FAIL:
        return str(trial.user_attrs.get(STATUS_ATTR, "failed"))
    return trial.state.name.lower()


def summaries(store: Path) -> list[tuple]:
    """(sweep, *counts of OUTCOMES, Ray retries, started) of every sweep in the store."""
    if not (Path(store) / "optuna.db").exists():
        return []
    out = []
    optuna_storage = storage(store)
    for summary in optuna.get_all_study_summaries(optuna_storage):
        study = optuna.load_study(study_name=summary.study_name, storage=optuna_storage)
        counts = Counter(outcome(t) for t in study.get_trials(deepcopy=False))
        retried = sum(t.user_attrs.get("ray_retries", 0) for t in study.get_trials(deepcopy=False))
        out.append((summary.study_name, *(counts[name] for name in OUTCOMES), retried,
                    f"{summary.datetime_start:%Y-%m-%d %H:%M}" if summary.datetime_start
                    else ""))
    return out
