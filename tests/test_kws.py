"""The speech task: corpus layout, loader, features and speaker partitions."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from sweeper.config import Scenario
from sweeper.kws.data import SILENCE, UNKNOWN, list_examples
from sweeper.kws.dataset import cache_root, client_partitions, dataset_root, load_data
from sweeper.kws.features import FeatureConfig
from sweeper.kws.models import MODELS, build_model, flops_per_example, parameter_count
from sweeper.kws.partition import dirichlet, iid
from sweeper.kws.synth import KEYWORDS, CorpusSpec, ensure_corpus
from sweeper.kws.train import train

TINY = Scenario(corpus_speakers=8, corpus_takes=2, num_clients=2, rounds=2)


def test_corpus_has_the_speech_commands_layout_and_is_cached() -> None:
    root = dataset_root(TINY)
    assert (root / "validation_list.txt").exists() and (root / "testing_list.txt").exists()
    assert len(list((root / "_background_noise_").glob("*.wav"))) == 3
    assert {p.name for p in root.iterdir() if p.is_dir()} >= set(KEYWORDS)
    before = (root / "yes").stat().st_mtime_ns
    assert ensure_corpus(CorpusSpec(speakers=8, takes=2), cache_root()) == root
    assert (root / "yes").stat().st_mtime_ns == before  # not regenerated


def test_no_speaker_in_two_splits() -> None:
    examples = list_examples(dataset_root(TINY))
    splits_of = {}
    for e in examples:
        if e.speaker:
            splits_of.setdefault(e.speaker, set()).add(e.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert {0, 1, 2} <= {s for splits in splits_of.values() for s in splits}


def test_twelve_balanced_classes() -> None:
    data = load_data(TINY)
    assert data.classes[-2:] == (UNKNOWN, SILENCE)
    counts = Counter(data.y[data.indices("train")].tolist())
    assert len(counts) == 12
    assert max(counts.values()) <= 2 * min(counts.values())
    assert data.x.shape[1:] == (1, 10, 51)  # 10 MFCCs x (1 s / 20 ms hop + 1)


def test_speaker_partition_invariants() -> None:
    data = load_data(TINY)
    parts = client_partitions(TINY, 0)
    train_idx = sorted(data.indices("train").tolist())
    assert sorted(i for p in parts for i in p) == train_idx  # each example in one client
    owners = {}
    for k, part in enumerate(parts):
        for i in part:
            if data.speakers[i]:
                owners.setdefault(data.speakers[i], set()).add(k)
    assert all(len(o) == 1 for o in owners.values())  # no speaker split across clients
    assert parts == client_partitions(TINY, 0)


def test_bf16_training_really_runs_in_bf16() -> None:
    data = load_data(TINY)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10 * 51, 12))
    seen = []
    model[1].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    x, y = data.x[:16], data.y[:16]
    train(model, x, y, epochs=1, batch_size=8, lr=0.01, precision="bf16", seed=0)
    assert seen and set(seen) == {torch.bfloat16}
    seen.clear()
    train(model, x, y, epochs=1, batch_size=8, lr=0.01, precision="fp32", seed=0)
    assert set(seen) == {torch.float32}
    seen.clear()
    train(model, x, y, epochs=1, batch_size=8, lr=0.01, precision="fp16", seed=0)
    assert set(seen) == {torch.float16}
    assert model[1].weight.dtype == torch.float32  # master weights stay fp32


def test_real_layout_is_read_by_the_same_loader(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    root = tmp_path / "speech_commands_v0.02"
    rng = np.random.default_rng(0)
    for word in ("yes", "no", "marvin"):
        (root / word).mkdir(parents=True)
        for spk in ("aaaa1111", "bbbb2222", "cccc3333"):
            sf.write(root / word / f"{spk}_nohash_0.wav",
                     rng.normal(0, 0.1, 12000).astype(np.float32), 16000)  # short: padded
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white_noise.wav",
             rng.normal(0, 0.1, 48000).astype(np.float32), 16000)
    (root / "validation_list.txt").write_text("yes/bbbb2222_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cccc3333_nohash_0.wav\nno/cccc3333_nohash_0.wav\n")
    examples = list_examples(root)
    by_path = {e.path: e for e in examples}
    assert by_path["yes/cccc3333_nohash_0.wav"].split == 2
    assert by_path["yes/bbbb2222_nohash_0.wav"].split == 1
    assert by_path["no/aaaa1111_nohash_0.wav"].speaker == "aaaa1111"
    assert any(e.label == 11 for e in examples)  # silence cut from the noise file
    scenario = Scenario(dataset="speech_commands", data_dir=str(root), num_clients=1)
    data = load_data(scenario)
    assert data.x.shape[1:] == (1, 10, 51)
    words35 = load_data(Scenario(dataset="speech_commands", data_dir=str(root), task="35",
                                 num_clients=1))
    assert len(words35.classes) == 35
    assert sorted({words35.classes[i] for i in words35.y.tolist()}) == ["marvin", "no", "yes"]


@pytest.mark.parametrize(("config", "shape"), [
    (FeatureConfig(), (10, 51)),
    (FeatureConfig(kind="logmel", n_mels=40, win_ms=30, hop_ms=10), (40, 101)),
    (FeatureConfig(sample_rate=8000, n_mfcc=13), (13, 51)),
    (FeatureConfig(kind="logmel", sample_rate=8000, n_mels=20, hop_ms=10), (20, 101)),
])
def test_feature_shapes_per_config(config: FeatureConfig, shape: tuple[int, int]) -> None:
    data = load_data(TINY, config)
    assert data.x.shape[1:] == (1, *shape) == (1, config.n_features, config.n_frames)
    assert load_data(TINY, config) is data  # computed once per process
    train = data.x[data.indices("train")]
    assert train.mean().abs() < 1e-3 and (train.std() - 1).abs() < 0.05  # normalized


def _label_skew(parts, labels) -> float:
    """Mean total-variation distance between each client's label mix and the pooled mix."""
    pooled = labels[[i for p in parts for i in p]]
    overall = np.bincount(pooled, minlength=12) / len(pooled)
    return float(np.mean([0.5 * np.abs(np.bincount(labels[list(p)], minlength=12) / len(p)
                                       - overall).sum() for p in parts]))


def test_iid_and_dirichlet_partitions() -> None:
    data = load_data(TINY)
    train = data.indices("train").tolist()
    labels = data.y.numpy()
    for parts in (iid(train, 4, 0), dirichlet(labels.tolist(), train, 4, 1000.0, 0),
                  dirichlet(labels.tolist(), train, 4, 0.1, 0)):
        assert sorted(i for p in parts for i in p) == sorted(train) and all(parts)
    near_iid = _label_skew(dirichlet(labels.tolist(), train, 4, 1000.0, 0), labels)
    skewed = _label_skew(dirichlet(labels.tolist(), train, 4, 0.1, 0), labels)
    assert near_iid < 0.1 < 0.4 < skewed
    assert _label_skew(iid(train, 4, 0), labels) < 0.5 * skewed  # sampling noise only
    assert iid(train, 4, 0) == iid(train, 4, 0) and iid(train, 4, 0) != iid(train, 4, 1)


def test_models_report_size_and_cost() -> None:
    sizes = {name: parameter_count(build_model(name, 12)) for name in MODELS}
    assert sizes["ds_cnn_s"] < sizes["ds_cnn_m"] < sizes["ds_cnn_l"]
    assert parameter_count(build_model("ds_cnn_s", 12, width=2.0)) > 2 * sizes["ds_cnn_s"]
    # FLOPs of a lone linear layer: 2 x in x out per example
    assert flops_per_example(torch.nn.Linear(510, 12), (510,)) == 2 * 510 * 12
    for name in MODELS:
        assert flops_per_example(build_model(name, 12), (1, 10, 51)) > 1e6


def test_baseline_command_logs_test_accuracy(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    from conftest import write_space
    from mlflow.tracking import MlflowClient

    from sweeper.cli import main
    from sweeper.tracking import tracking_uri

    store = tmp_path / "store"
    assert main(["baseline", "--space", str(write_space(tmp_path / "s.yaml")), "--epochs", "2",
                 "--set", "model=ds_cnn_s", "--store", str(store)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    client = MlflowClient(tracking_uri(store))
    experiment = client.get_experiment_by_name("tiny-baselines")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["model"] == "ds_cnn_s"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [1, 2]


class _Planted:
    """What an attacker would plant in a predictable cache file: code run on unpickling."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["SWEEPER_CACHE"]) / "planted-code-ran",))


def test_the_feature_cache_is_read_without_pickle(tmp_path: Path) -> None:
    import pickle

    from sweeper.kws.features import load_features

    root, config = dataset_root(TINY), FeatureConfig()
    load_features(root, config, tmp_path)
    (cache,) = tmp_path.glob("features-*.pt")
    torch.save({"x": _Planted()}, cache)
    with pytest.raises(pickle.UnpicklingError):
        load_features(root, config, tmp_path)
    assert not (Path(os.environ["SWEEPER_CACHE"]) / "planted-code-ran").exists()
