"""Data summarization: which of a client's examples it trains on this round.

`random` re-draws a seeded subset each round; `loss` keeps the examples the current global
model gets most wrong (highest loss, one forward pass in eval mode); `coreset` picks a
k-center greedy cover (Sener & Savarese, 2018) of the examples' penultimate-layer
embeddings under the current model. The forward passes are the selection's own compute:
they run inside the client's measured window and are charged to it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from sweeper.kws import SUMMARIES
from sweeper.plugins import resolve


def subset_size(n: int, fraction: float) -> int:
    return n if fraction >= 1.0 else max(1, math.ceil(fraction * n))


def select(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fraction: float, method: str,
           seed: int) -> torch.Tensor:
    """Indices (sorted) of the examples to train on; all of them when fraction is 1."""
    n = len(y)
    k = subset_size(n, fraction)
    if k >= n:
        return torch.arange(n)
    return resolve(SUMMARIES, method, "summary method")(model, x, y, k, seed)


def random_subset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int,
                  seed: int) -> torch.Tensor:
    """A seeded draw of k examples, without replacement."""
    chosen = np.random.default_rng(seed).choice(len(y), size=k, replace=False)
    return torch.from_numpy(np.sort(chosen))


def highest_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int,
                 seed: int) -> torch.Tensor:
    """The k examples the model gets most wrong."""
    return torch.sort(torch.topk(per_example_loss(model, x, y), k).indices).values


def coreset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int,
            seed: int) -> torch.Tensor:
    """A k-center cover of the examples' embeddings."""
    return k_center_greedy(embed(model, x), k, seed)


@torch.no_grad()
def per_example_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([nn.functional.cross_entropy(model(x[i:i + batch_size]),
                                                  y[i:i + batch_size], reduction="none")
                      for i in range(0, len(y), batch_size)])


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Penultimate-layer features (the input of the model's linear `head`)."""
    model.eval()
    return torch.cat([model.features(x[i:i + batch_size]).flatten(1)
                      for i in range(0, len(x), batch_size)])


def k_center_greedy(points: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Greedy 2-approximation of the k-center cover: start from a seeded point, then add
    the point farthest from everything chosen so far."""
    n = len(points)
    first = int(np.random.default_rng(seed).integers(n))
    chosen = [first]
    nearest = torch.cdist(points, points[first:first + 1]).squeeze(1)
    for _ in range(k - 1):
        far = int(torch.argmax(nearest))
        chosen.append(far)
        nearest = torch.minimum(nearest, torch.cdist(points, points[far:far + 1]).squeeze(1))
    return torch.sort(torch.tensor(chosen)).values
