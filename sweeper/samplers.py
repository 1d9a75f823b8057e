"""Optuna samplers by name: the space's `sampler.name` is checked against `SAMPLERS` and the
study is built from it, so a sampler is added here only."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna

if TYPE_CHECKING:
    from sweeper.space import SearchSpace


class ExhaustiveSampler(optuna.samplers.BruteForceSampler):
    """Optuna's brute-force sampler (every combination, conditional leverages included),
    for ask/tell: it calls `Study.stop()` once the space is exhausted, which Optuna only
    allows inside `optimize`; here that becomes `exhausted`, and the driver stops asking."""

    exhausted = False

    def after_trial(self, study, trial, state, values) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise
            self.exhausted = True


# name -> factory(space, seed); the first is the default
SAMPLERS: dict[str, Callable[[SearchSpace, int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda space, seed: optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                          group=True),
    "nsga2": lambda space, seed: optuna.samplers.NSGAIISampler(
        seed=seed, population_size=space.population_size),
    "random": lambda space, seed: optuna.samplers.RandomSampler(seed=seed),
    "gp": lambda space, seed: optuna.samplers.GPSampler(seed=seed),
    "grid": lambda space, seed: ExhaustiveSampler(seed=seed),
}


def new_sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """The space's sampler, seeded with `seed`."""
    return SAMPLERS[space.sampler](space, seed)
