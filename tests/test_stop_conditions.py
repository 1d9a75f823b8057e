"""The sweep driver's stop conditions, as plain functions: no Ray, no store."""

from __future__ import annotations

import optuna

from sweeper.orchestrate import energy_budget_stop, grid_exhausted, trials_reached, wall_clock_stop
from sweeper.samplers import ExhaustiveSampler


def test_wall_clock() -> None:
    assert wall_clock_stop(None, 1e9) is None
    assert wall_clock_stop(60.0, 60.0) is None  # reached only once past it
    assert wall_clock_stop(60.0, 60.5) == "wall-clock budget of 60 s reached"


def test_energy_budget() -> None:
    assert energy_budget_stop(None, 1e9) is None
    assert energy_budget_stop(100.0, 99.9) is None
    assert energy_budget_stop(100.0, 100.0) == "energy budget reached: 100 J of 100 J"


def test_grid_exhausted() -> None:
    grid = ExhaustiveSampler(seed=0)
    assert not grid_exhausted(grid) and not grid_exhausted(optuna.samplers.RandomSampler(0))
    grid.exhausted = True
    assert grid_exhausted(grid)


def test_trials_reached_counts_running_configurations() -> None:
    assert not trials_reached(4, finished=2, in_flight=1)
    assert trials_reached(4, finished=2, in_flight=2)
    assert trials_reached(4, finished=5, in_flight=0)  # a resumed sweep may hold more
