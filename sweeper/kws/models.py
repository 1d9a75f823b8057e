"""Keyword-spotting models."""

from __future__ import annotations

import torch
from torch import nn


class SmallCnn(nn.Module):
    """Three conv blocks and a linear head over log-mel input [B, 1, n_mels, frames]."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout),
                                 nn.ReLU(), nn.MaxPool2d(2))

        # Pooling to a 4 x 4 grid (not to 1 x 1) keeps the order of the sounds in a word.
        self.features = nn.Sequential(block(1, width), block(width, 2 * width),
                                      block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def build_model(name: str, num_classes: int) -> nn.Module:
    if name == "cnn_small":
        return SmallCnn(num_classes)
    raise ValueError(f"unknown model {name!r}")
