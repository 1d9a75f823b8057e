"""`isolation: node`: at most one trial per Ray node at a time, so that a node's counters
are one trial's own; a space that cannot keep that promise is refused at load."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import TINY_SCENARIO, write_space

from sweeper.cli import main
from sweeper.errors import SpaceError
from sweeper.space import load_space
from sweeper.study import storage_url, stored_result

ISOLATED = {**TINY_SCENARIO, "isolation": "node", "meters": "auto", "idle_probe_s": 0.2}


def _windows(placements: list[dict]) -> list[tuple[dt.datetime, dt.datetime]]:
    return [(dt.datetime.fromisoformat(p["start_utc"]), dt.datetime.fromisoformat(p["end_utc"]))
            for p in placements]


def test_two_slots_on_one_node_run_one_trial_at_a_time(tmp_path: Path,
                                                        ray_cluster: str) -> None:
    """The session's Ray is one node with two CPUs: without isolation two trials would run
    side by side here."""
    space = write_space(tmp_path / "iso.yaml", scenario=ISOLATED,
                        budget={"trials": 3, "parallel": 2})
    store = tmp_path / "store"
    assert main(["pareto", "--space", str(space), "--store", str(store), "--name", "iso",
                 "--ray-address", ray_cluster]) == 0
    study = optuna.load_study(study_name="iso", storage=storage_url(store))
    windows = sorted(_windows([stored_result(t).info["placement"] for t in study.trials]))
    assert len(windows) == 3
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, windows


SCRIPT = """
import json, sys
from ray.cluster_utils import Cluster
from sweeper.orchestrate import run_sweep
from sweeper.space import load_space
from sweeper.study import stored_result

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
try:
    outcome = run_sweep(load_space(sys.argv[1]), sys.argv[2], sweep="two",
                        ray_address=cluster.address, dashboard=False)
    print(json.dumps([stored_result(t).info["placement"] for t in outcome.study.trials]))
finally:
    cluster.shutdown()
"""


@pytest.mark.slow  # ~50 s: a two-node ray.cluster_utils cluster and a sweep on it
def test_two_nodes_run_two_trials_at_once_one_on_each(tmp_path: Path) -> None:
    space = write_space(tmp_path / "iso.yaml", scenario={**ISOLATED, "rounds": 4},
                        budget={"trials": 2, "parallel": 2})
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(space), str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    placements = json.loads(done.stdout.strip().splitlines()[-1])
    assert len({p["ray_node_id"] for p in placements}) == 2
    (start_a, end_a), (start_b, end_b) = _windows(placements)
    assert start_a < end_b and start_b < end_a  # in parallel


def test_a_space_whose_trials_spread_over_nodes_is_refused(tmp_path: Path) -> None:
    space = write_space(tmp_path / "spread.yaml",
                        scenario={**ISOLATED, "engine": "deployment",
                                  "deploy_placement": "ray"})
    with pytest.raises(SpaceError, match="isolation: node cannot be kept with "
                                         "deploy_placement: ray"):
        load_space(space)
    assert main(["pareto", "--space", str(space), "--store", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()
