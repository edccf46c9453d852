"""The zoo's PyTorch modules (the registry that names them is ``models.py``).

Every model takes float images ``(N, 1, 28, 28)`` in ``[0, 1]`` (ink bright on dark, as MNIST)
and returns logits ``(N, num_classes)``. Input normalisation is the model's first layer, so a
model directory needs nothing else to be used.
"""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std with fixed constants; kept as a layer so saved models carry it."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mlp(sizes: list[int], num_classes: int, mean: float, std: float) -> nn.Sequential:
    """Dense layers ``sizes[0] -> sizes[1] -> ... -> num_classes`` with ReLUs between."""
    layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], num_classes))
    return nn.Sequential(*layers)


def convnet(num_classes: int, mean: float, std: float, dropout: float) -> nn.Sequential:
    """The Keras example convnet: conv32-pool-conv64-pool-dropout-dense."""
    return nn.Sequential(
        Normalize(mean, std),
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 5 * 5, num_classes),
    )


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CNN(nn.Module):
    """Conv stages (28 -> 14 -> 7), global max pool, linear head.

    Each stage is conv -> max-pool -> BatchNorm -> ReLU (pooling before the elementwise layers,
    as airbench does): on a CPU the BatchNorm and ReLU passes cost more than the convolutions,
    and pooling first runs them on 4x fewer values (1.3x faster training, same accuracy).
    ``depth`` > 1 adds conv-BN-ReLU layers at each resolution. BatchNorm lets the model take a
    high one-cycle learning rate; global max pooling keeps the head tiny and shift-tolerant.

    ``strided_stem`` makes the first stage a 4x4 convolution with stride 2 (28 -> 14 directly)
    instead of a 3x3 convolution and a max-pool: the pool over the full 28x28 maps, its
    backward pass and the zeroed gradient it needs are a quarter of a narrow CNN's training
    step on a CPU; the strided stem skips them (about 12% faster, same validation accuracy in
    the ``fast-99.5`` preset's trials).
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...], mean: float, std: float,
                 depth: int, strided_stem: bool):
        super().__init__()
        layers: list[nn.Module] = [Normalize(mean, std)]
        cin = 1
        for i, w in enumerate(widths):
            if i == 0 and strided_stem:
                layers.append(nn.Conv2d(cin, w, 4, stride=2, padding=1, bias=False))
            else:
                layers.append(nn.Conv2d(cin, w, 3, padding=1, bias=False))
                if i < len(widths) - 1:
                    layers.append(nn.MaxPool2d(2))
            layers += [nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            for _ in range(depth - 1):
                layers += _conv_bn(w, w)
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class Ensemble(nn.Module):
    """Averages the members' softmax probabilities; returns log-probabilities as logits, so a
    softmax of the output is exactly the mean probability."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(-1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()
