"""Local training and evaluation with a chosen arithmetic precision (autocast).

`TrainSettings.from_leverages` is the one place that reads the training leverages: the
ClientApp, its warm-up and the centralized baseline all train through it, so a new training
knob reaches the federation and its ceiling alike (tests/test_baseline.py checks they agree).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    """fp32: plain arithmetic; bf16/fp16: CPU autocast (matmuls and convolutions in that
    dtype, reductions, weights and the optimizer step in fp32). On CPU, fp16 runs without a
    gradient scaler (torch's GradScaler is for CUDA), so tiny gradients may underflow."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=AUTOCAST_DTYPES[precision])


@dataclass(frozen=True)
class TrainSettings:
    """How a model trains on local data: `train`'s arguments, from the trial's leverages."""

    epochs: int  # passes over the data
    batch_size: int
    lr: float
    precision: str  # "fp32" | "bf16" | "fp16"
    optimizer: str  # "sgd" | "adam"
    proximal_mu: float = 0.0  # FedProx's proximal weight; 0: none

    @classmethod
    def from_leverages(cls, leverages: dict[str, Any]) -> TrainSettings:
        return cls(epochs=int(leverages["local_epochs"]),
                   batch_size=int(leverages["batch_size"]), lr=float(leverages["lr"]),
                   precision=str(leverages["precision"]),
                   optimizer=str(leverages["optimizer"]),
                   proximal_mu=(float(leverages["proximal_mu"])
                                if leverages["strategy"] == "fedprox" else 0.0))

    def fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int) -> float:
        """`train` with these settings; the mean training loss of the last epoch."""
        return train(model, x, y, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                     precision=self.precision, seed=seed, proximal_mu=self.proximal_mu,
                     optimizer=self.optimizer)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
          lr: float, precision: str, seed: int, proximal_mu: float = 0.0,
          optimizer: str = "sgd") -> float:
    """Mini-batch training over (x, y) with SGD (momentum 0.9) or Adam; returns the mean
    training loss of the last epoch.

    With `proximal_mu` > 0 the loss gains (mu / 2) * ||w - w_start||^2, FedProx's proximal
    term anchoring the local model to the one training started from (Li et al., 2020)."""
    generator = torch.Generator().manual_seed(seed)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    step = (torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam"
            else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(y), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:  # a lone straggler example adds noise, not signal
                continue
            step.zero_grad()
            with precision_context(precision):
                loss = loss_fn(model(x[batch]), y[batch])
            if anchor:
                loss = loss + proximal_mu / 2 * sum(
                    (p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
            loss.backward()
            step.step()
            total += loss.item() * len(batch)
            count += len(batch)
        last = total / max(count, 1)
    return last


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 512) -> tuple[float, float]:
    """(loss, accuracy) of `model` on (x, y), in fp32."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start:start + batch_size])
        total_loss += float(loss_fn(logits, y[start:start + batch_size]))
        correct += int((logits.argmax(1) == y[start:start + batch_size]).sum())
    return total_loss / len(y), correct / len(y)
