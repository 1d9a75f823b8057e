"""Log-mel features (torchaudio), computed once per (dataset, feature config) and cached."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchaudio.transforms as T

from sweeper.kws.data import SPLITS, Example, classes_for, list_examples, load_clip

# Bump when the example list or the feature computation changes: invalidates the caches.
FEATURES_VERSION = 3


@dataclass(frozen=True)
class FeatureConfig:
    """Defaults: the 10 MFCCs over 40 ms windows every 20 ms of Zhang et al. (2017)."""

    kind: str = "mfcc"  # "mfcc" | "logmel"
    sample_rate: int = 16_000  # audio is resampled to this rate first
    n_mels: int = 40
    n_mfcc: int = 10  # mfcc only: coefficients kept (of n_mels)
    win_ms: float = 40.0
    hop_ms: float = 20.0

    @property
    def n_features(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def n_frames(self) -> int:
        hop = int(self.sample_rate * self.hop_ms / 1000)
        return self.sample_rate // hop + 1


@dataclass
class KwsData:
    """Features of a whole dataset: x [N, 1, n_mels, frames], labels, speakers, splits."""

    x: torch.Tensor
    y: torch.Tensor
    speakers: list[str]
    split: torch.Tensor
    classes: tuple[str, ...]

    def indices(self, split: str) -> torch.Tensor:
        return torch.nonzero(self.split == SPLITS.index(split)).flatten()


def transform(config: FeatureConfig) -> torch.nn.Module:
    """Waveforms [N, samples] -> features [N, n_features, frames] (log-mel or MFCC)."""
    win = int(config.sample_rate * config.win_ms / 1000)
    mel = {"n_fft": win, "win_length": win,
           "hop_length": int(config.sample_rate * config.hop_ms / 1000), "n_mels": config.n_mels}
    if config.kind == "mfcc":
        return T.MFCC(sample_rate=config.sample_rate, n_mfcc=config.n_mfcc, melkwargs=mel)
    spectrogram = T.MelSpectrogram(sample_rate=config.sample_rate, **mel)
    return torch.nn.Sequential(spectrogram, _Log())


class _Log(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x + 1e-6)


def dataset_identity(root: Path) -> str:
    """Names a dataset folder by its path and list files, so a changed folder is re-featurized."""
    parts = [str(Path(root).resolve())]
    for name in ("validation_list.txt", "testing_list.txt", "spec.json"):
        path = Path(root) / name
        if path.exists():
            stat = path.stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def load_features(root: Path, config: FeatureConfig, cache_root: Path, task: str = "12",
                  seed: int = 0) -> KwsData:
    """Features of every example of `root`, from the cache when it holds them."""
    key = hashlib.sha256(json.dumps([FEATURES_VERSION, dataset_identity(root), asdict(config),
                                     task, seed]
                                    ).encode()).hexdigest()[:16]
    cache = Path(cache_root) / f"features-{key}.pt"
    if cache.exists():
        # weights_only: tensors and plain containers only, never code (no pickle objects)
        return KwsData(**torch.load(cache, weights_only=True))
    examples = list_examples(root, task, seed)
    data = _compute(root, examples, config, classes_for(task))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save(vars(data), tmp)
    tmp.replace(cache)
    return data


def _compute(root: Path, examples: list[Example], config: FeatureConfig,
             classes: tuple[str, ...]) -> KwsData:
    waves = torch.stack([load_clip(root, e, config.sample_rate) for e in examples])
    with torch.no_grad():
        x = transform(config)(waves).unsqueeze(1)
    split = torch.tensor([e.split for e in examples])
    train = x[split == 0]  # per-feature statistics of the training split only
    x = (x - train.mean(dim=(0, 3), keepdim=True)) / (train.std(dim=(0, 3), keepdim=True) + 1e-6)
    return KwsData(x.contiguous(), torch.tensor([e.label for e in examples]),
                   [e.speaker for e in examples], split, classes)
