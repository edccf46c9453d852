"""The model zoo: small nn.Module builders behind a registry.

Every model takes float images ``(N, 1, 28, 28)`` in ``[0, 1]`` (ink bright on dark, as MNIST)
and returns logits ``(N, num_classes)``. Input normalisation is the model's first layer, so a
model directory needs nothing else to be used. ``create_model(name, **kwargs)`` builds one;
``list_models()`` describes them all. Each entry also carries the training defaults that suit it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the MNIST training pixels scaled to [0, 1]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    # Training defaults for this architecture (any TrainConfig field); chosen by benchmark.
    defaults: dict = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, description: str, **defaults):
    def wrap(fn):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = ModelSpec(name, fn, description, defaults)
        return fn
    return wrap


def list_models() -> list[str]:
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose from: {', '.join(list_models())}") from None


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered model. Unknown names or keyword arguments raise ``ConfigError``."""
    spec = get_spec(name)
    try:
        return spec.builder(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for model {name!r}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Normalize(nn.Module):
    """(x - mean) / std with fixed constants; kept as a layer so saved models carry it."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD):
        super().__init__()
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def _mlp(sizes: list[int], num_classes: int, mean: float, std: float) -> nn.Sequential:
    layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], num_classes))
    return nn.Sequential(*layers)


# Dense tutorials: layer for layer, but with softmax-logits + cross-entropy (see README).
_DENSE = dict(optimizer="adam", batch_size=128, schedule="onecycle", augment="none",
              weight_decay=0.0, precision="fp32")


@register_model("dense", "784->10 softmax regression (the single dense layer tutorial)",
                **{**_DENSE, "epochs": 5, "lr": 0.01})
def dense(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> nn.Module:
    return _mlp([784], num_classes, mean, std)


@register_model("mlp100", "784-100-10 ReLU MLP (the classic Keras tutorial)",
                **{**_DENSE, "epochs": 3, "lr": 0.005})
def mlp100(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> nn.Module:
    return _mlp([784, 100], num_classes, mean, std)


@register_model("mlp128x64", "784-128-64-10 ReLU MLP",
                **{**_DENSE, "epochs": 4, "lr": 0.005})
def mlp128x64(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> nn.Module:
    return _mlp([784, 128, 64], num_classes, mean, std)


@register_model("mlp150x50", "784-150-50-10 ReLU MLP",
                **{**_DENSE, "epochs": 4, "lr": 0.005})
def mlp150x50(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> nn.Module:
    return _mlp([784, 150, 50], num_classes, mean, std)


@register_model("convnet", "Keras example convnet: conv32-pool-conv64-pool-dropout-dense10",
                optimizer="adam", lr=0.003, epochs=8, batch_size=128, schedule="onecycle",
                augment="none", weight_decay=0.0, precision="auto")
def convnet(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD,
            dropout: float = 0.5) -> nn.Module:
    return nn.Sequential(
        Normalize(mean, std),
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 5 * 5, num_classes),
    )


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


STEMS = ("pool", "stride")


class CNN(nn.Module):
    """Conv stages (28 -> 14 -> 7), global max pool, linear head.

    Each stage is conv -> max-pool -> BatchNorm -> ReLU (pooling before the elementwise layers,
    as airbench does): on a CPU the BatchNorm and ReLU passes cost more than the convolutions,
    and pooling first runs them on 4x fewer values (1.3x faster training, same accuracy).
    ``depth`` > 1 adds conv-BN-ReLU layers at each resolution. BatchNorm lets the model take a
    high one-cycle learning rate; global max pooling keeps the head tiny and shift-tolerant.

    ``stem="stride"`` makes the first stage a 4x4 convolution with stride 2 (28 -> 14 directly)
    instead of a 3x3 convolution and a max-pool: the pool over the full 28x28 maps, its
    backward pass and the zeroed gradient it needs are a quarter of a narrow CNN's training
    step on a CPU; the strided stem skips them (about 12% faster, same validation accuracy in
    the ``fast-99.5`` preset's trials).
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128),
                 mean: float = MNIST_MEAN, std: float = MNIST_STD, depth: int = 1,
                 stem: str = "pool"):
        super().__init__()
        if stem not in STEMS:
            raise ConfigError(f"unknown stem {stem!r}; choose from: {', '.join(STEMS)}")
        if not widths or depth < 1:
            raise ConfigError("a cnn needs at least one stage width and depth >= 1")
        layers: list[nn.Module] = [Normalize(mean, std)]
        cin = 1
        for i, w in enumerate(widths):
            if i == 0 and stem == "stride":
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


@register_model("cnn", "default CNN: 3 conv-BN stages (32-64-128), global max pool",
                optimizer="sgd", lr=0.05, epochs=5, batch_size=128, schedule="onecycle",
                augment="standard", weight_decay=5e-4, label_smoothing=0.1, precision="auto")
def cnn(num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128), depth: int = 1,
        mean: float = MNIST_MEAN, std: float = MNIST_STD, stem: str = "pool") -> nn.Module:
    return CNN(num_classes, tuple(widths), mean, std, depth, stem)


class Ensemble(nn.Module):
    """Averages the members' softmax probabilities; returns log-probabilities as logits, so a
    softmax of the output is exactly the mean probability."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(-1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()
