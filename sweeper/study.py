"""The Optuna study of a sweep: sampler, persistent storage, objectives and Pareto front."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import StoreError
from sweeper.result import TrialResult
from sweeper.space import SearchSpace

RESULT_ATTR = "result"
INTERRUPTED_ATTR = "interrupted"
SPACE_ATTR = "space_yaml"


def storage_url(store: Path) -> str:
    return f"sqlite:///{Path(store).resolve() / 'optuna.db'}"


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    seed = space.sampler_seed
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def open_study(space: SearchSpace, sweep: str, store: Path, create: bool) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(store)
    directions = [o.direction for o in space.objectives]
    if not create:
        try:
            study = optuna.load_study(study_name=sweep, storage=url,
                                      sampler=make_sampler(space))
        except KeyError:
            raise StoreError(f"no sweep named {sweep!r} in {url}") from None
        if [d.name.lower() for d in study.directions] != directions:
            raise StoreError(f"sweep {sweep!r} has other objectives than {space.path}")
        return study
    study = optuna.create_study(study_name=sweep, storage=url, directions=directions,
                                sampler=make_sampler(space))
    study.set_user_attr(SPACE_ATTR, Path(space.path).read_text())
    study.set_user_attr("objectives", [o.metric for o in space.objectives])
    return study


def is_finished(trial: FrozenTrial) -> bool:
    """Counts toward the budget: complete, failed or pruned, but not cut off by a kill."""
    if trial.user_attrs.get(INTERRUPTED_ATTR):
        return False
    return trial.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def stored_result(trial: FrozenTrial) -> TrialResult | None:
    raw = trial.user_attrs.get(RESULT_ATTR)
    return TrialResult.from_dict(json.loads(raw)) if raw else None


def tell(study: optuna.Study, trial: optuna.Trial, space: SearchSpace,
         result: TrialResult) -> None:
    """Record a finished trial: values for an ok result, FAIL otherwise; the whole result
    (rounds, meters, reason) is kept with it, so MLflow can be re-logged from Optuna alone."""
    trial.set_user_attr(RESULT_ATTR, json.dumps(result.to_dict()))
    if result.status == "ok":
        study.tell(trial, [result.objective(o.metric) for o in space.objectives])
    else:
        study.tell(trial, state=TrialState.FAIL)


def recover_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed driver: mark them failed-interrupted and queue their
    parameters again, so the resumed sweep runs exactly them. Returns how many."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        live = optuna.Trial(study, trial._trial_id)
        live.set_user_attr(INTERRUPTED_ATTR, True)
        study.tell(live, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
        count += 1
    return count


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    return list(study.best_trials)
