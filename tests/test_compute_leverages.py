"""Data summarization and speed scaling."""

from __future__ import annotations

from pathlib import Path

import torch

from sweeper.config import Scenario, TrialConfig, resolve_leverages
from sweeper.kws.dataset import load_data
from sweeper.kws.models import build_model
from sweeper.kws.summarize import k_center_greedy, per_example_loss, select
from sweeper.trial import run_trial

TINY = Scenario(corpus_speakers=8, corpus_takes=2, num_clients=2, rounds=2)


def _run(**leverages):
    return run_trial(TrialConfig(TINY, resolve_leverages(leverages, TINY), 0))


def test_full_fraction_is_the_plain_path_bit_for_bit() -> None:
    plain, full = _run(), _run(data_fraction=1.0, summary="coreset")
    assert plain.status == full.status == "ok"
    assert [(r.accuracy, r.loss) for r in plain.rounds] == [(r.accuracy, r.loss)
                                                            for r in full.rounds]


def test_fraction_touches_fewer_examples_and_reports_them() -> None:
    full, part = _run(), _run(data_fraction=0.25, summary="random")
    assert part.status == "ok", part.reason
    for a, b in zip(full.rounds, part.rounds, strict=True):
        assert b.examples_used < 0.3 * a.examples_used
    per_client = part.info["examples_by_client"][1]
    assert sum(per_client.values()) == part.rounds[0].examples_used


def _tiny_model_and_data():
    data = load_data(TINY)
    torch.manual_seed(0)
    return build_model("cnn_small", 12), data.x[:120], data.y[:120]


def test_random_summary_is_seeded() -> None:
    model, x, y = _tiny_model_and_data()
    a = select(model, x, y, 0.2, "random", seed=5)
    assert torch.equal(a, select(model, x, y, 0.2, "random", seed=5))
    assert not torch.equal(a, select(model, x, y, 0.2, "random", seed=6))
    assert len(a) == 24 and len(set(a.tolist())) == 24


def test_loss_summary_picks_the_highest_loss_examples() -> None:
    model, x, y = _tiny_model_and_data()
    chosen = select(model, x, y, 0.1, "loss", seed=0)
    with torch.no_grad():
        model.eval()
        direct = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    assert set(chosen.tolist()) == set(torch.argsort(direct, descending=True)[:12].tolist())
    assert torch.allclose(per_example_loss(model, x, y), direct, atol=1e-5)


def test_coreset_covers_clustered_data_better_than_random() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(8, 16, generator=generator) * 10
    sizes = [200, 100, 50, 20, 10, 5, 5, 5]  # unbalanced clusters
    points = torch.cat([c + torch.randn(n, 16, generator=generator)
                        for c, n in zip(centers, sizes, strict=True)])

    def radius(index: torch.Tensor) -> float:  # the largest distance to the chosen set
        return float(torch.cdist(points, points[index]).min(dim=1).values.max())

    coreset = k_center_greedy(points, 8, seed=0)
    randoms = [torch.randperm(len(points), generator=generator)[:8] for _ in range(20)]
    assert radius(coreset) < min(radius(r) for r in randoms)


def test_unsupported_speed_leverage_refuses_the_trial(tmp_path: Path) -> None:
    refused = _run(cpu_freq_khz=1_200_000)
    assert refused.status == "failed"
    assert "cpu_freq_khz=1200000" in refused.reason and "sudo-g5k" in refused.reason
    no_gpu = _run(gpu_power_limit_w=100.0)
    assert no_gpu.status == "failed" and "gpu_power_limit_w=100" in no_gpu.reason


def test_threads_per_client_is_applied_and_recorded() -> None:
    result = _run(threads_per_client=2)
    assert result.status == "ok" and result.info["speed"]["torch_threads"] == 2
