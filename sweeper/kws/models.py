"""Keyword-spotting models."""

from __future__ import annotations

import torch
from torch import nn


class SmallCnn(nn.Module):
    """A compact CNN over log-mel input [B, 1, n_mels, frames].

    The first layer's 10x4 kernel with stride 2 (as in the CNNs of Zhang et al., "Hello
    Edge", 2017) halves both axes at once, which keeps the cost low; pooling to a 4 x 4 grid
    rather than 1 x 1 keeps the order of the sounds in a word. No normalization layer: a
    federated average of normalization statistics is a research question of its own.
    """

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, (10, 4), stride=(2, 2), padding=(5, 1)), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def build_model(name: str, num_classes: int) -> nn.Module:
    if name == "cnn_small":
        return SmallCnn(num_classes)
    raise ValueError(f"unknown model {name!r}")
