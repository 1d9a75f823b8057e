"""Keyword-spotting models, with parameter counts and FLOPs per example."""

from __future__ import annotations

import torch
from torch import nn

from sweeper.kws import MODELS
from sweeper.plugins import resolve


class SmallCnn(nn.Module):
    """A compact CNN over [B, 1, features, frames].

    The first layer's 10x4 kernel with stride 2 (as in the CNNs of Zhang et al., "Hello
    Edge", 2017) halves both axes at once, which keeps the cost low; pooling to a 4 x 4 grid
    rather than 1 x 1 keeps the order of the sounds in a word. No normalization layer: a
    federated average of normalization statistics is a research question of its own.
    """

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        c = max(4, round(32 * width))
        self.features = nn.Sequential(
            nn.Conv2d(1, c, (10, 4), stride=(2, 2), padding=(5, 1)), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(2 * c * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class DsCnn(nn.Module):
    """Depthwise-separable CNN of Zhang et al., "Hello Edge: Keyword Spotting on
    Microcontrollers" (2017), as in ARM's ML-KWS-for-MCU: a full convolution, then blocks
    of depthwise 3x3 + pointwise 1x1 convolutions (each with BatchNorm and ReLU), global
    average pooling and a linear classifier. Input [B, 1, frames-by-features] is taken as
    [B, 1, features, frames] and transposed so kernels run (time, frequency) as in the paper.
    """

    def __init__(self, num_classes: int, channels: int, blocks: int,
                 first_stride: tuple[int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(1, channels, (10, 4), stride=first_stride, padding=(5, 1), bias=False),
            nn.BatchNorm2d(channels), nn.ReLU()]
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(),
                       nn.Conv2d(channels, channels, 1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.transpose(2, 3)).flatten(1))


# (channels, depthwise-separable blocks, stride of the first convolution), Zhang et al. 2017
DS_CNN_SIZES = {"ds_cnn_s": (64, 4, (2, 2)), "ds_cnn_m": (172, 4, (2, 1)),
                "ds_cnn_l": (276, 5, (2, 1))}


def small_cnn(num_classes: int, width: float = 1.0) -> SmallCnn:
    return SmallCnn(num_classes, width)


def _ds_cnn(size: str, num_classes: int, width: float) -> DsCnn:
    channels, blocks, stride = DS_CNN_SIZES[size]
    return DsCnn(num_classes, max(4, round(channels * width)), blocks, stride)


def ds_cnn_s(num_classes: int, width: float = 1.0) -> DsCnn:
    return _ds_cnn("ds_cnn_s", num_classes, width)


def ds_cnn_m(num_classes: int, width: float = 1.0) -> DsCnn:
    return _ds_cnn("ds_cnn_m", num_classes, width)


def ds_cnn_l(num_classes: int, width: float = 1.0) -> DsCnn:
    return _ds_cnn("ds_cnn_l", num_classes, width)


def build_model(name: str, num_classes: int, width: float = 1.0) -> nn.Module:
    """A model by name (`sweeper.kws.MODELS`); `width` multiplies its channel counts."""
    return resolve(MODELS, name, "model")(num_classes, width)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_example(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one example, counted by torch's FlopCounterMode (a multiply-add
    counts as 2 FLOPs; convolutions and matmuls only)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    return int(counter.get_total_flops())


def training_flops_per_example(model: nn.Module, input_shape: tuple[int, ...],
                               num_classes: int) -> int:
    """Forward + backward FLOPs of one training example (cross-entropy loss), counted by
    FlopCounterMode on a real step of two examples (BatchNorm needs more than one) / 2.
    The count is the same whatever the precision; what a FLOP costs is not."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).train()
    x, y = torch.zeros(2, *input_shape), torch.zeros(2, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(probe(x), y % num_classes).backward()
    return int(counter.get_total_flops()) // 2
