"""The model zoo's registry: names, descriptions, training defaults and builders.

``create_model(name, **kwargs)`` builds a registered model (the PyTorch modules live in
``nets.py``, imported only when a model is built); ``list_models()`` names them; ``get_spec``
describes one, including its parameter count for given options, worked out without building
it. Nothing here imports torch, so ``digitlab models`` and ``--help`` stay instant.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from .errors import ConfigError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the MNIST training pixels scaled to [0, 1]
STEMS = ("pool", "stride")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable
    description: str
    parameters: Callable[..., int]  # (num_classes, **options) -> trainable parameter count
    # Training defaults for this architecture (any TrainConfig field); chosen by benchmark.
    defaults: dict = field(default_factory=dict)

    def options(self) -> list[str]:
        """The architecture options ``create_model`` accepts for this model."""
        return [p for p in inspect.signature(self.builder).parameters if p != "num_classes"]

    def count(self, num_classes: int = 10, **options) -> int:
        """Trainable parameters of the model these options build."""
        defaults = {k: v.default for k, v in inspect.signature(self.builder).parameters.items()
                    if k != "num_classes"}
        return self.parameters(num_classes, **{**defaults, **options})


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, description: str, parameters: Callable[..., int], **defaults):
    def wrap(fn):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = ModelSpec(name, fn, description, parameters, defaults)
        return fn
    return wrap


def list_models() -> list[str]:
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose from: {', '.join(list_models())}") from None


def create_model(name: str, num_classes: int = 10, **kwargs):
    """Build a registered model (an ``nn.Module``). Unknown names or options raise ``ConfigError``."""
    spec = get_spec(name)
    unknown = set(kwargs) - set(spec.options())
    if unknown:
        raise ConfigError(f"bad arguments for model {name!r}: unknown option(s) "
                          f"{', '.join(sorted(unknown))}; options: {', '.join(spec.options())}")
    return spec.builder(num_classes=num_classes, **kwargs)


# -- parameter counts (a test checks each against the built module) --------------------------

def _dense_count(sizes: list[int], num_classes: int) -> int:
    sizes = [*sizes, num_classes]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _cnn_count(num_classes: int, widths, depth: int, stem: str, **_) -> int:
    total, cin = 0, 1
    for i, w in enumerate(widths):
        k = 4 if i == 0 and stem == "stride" else 3
        total += cin * w * k * k + 2 * w            # conv (no bias) + BatchNorm scale and shift
        total += (depth - 1) * (w * w * 9 + 2 * w)  # extra conv-BN layers at this resolution
        cin = w
    return total + cin * num_classes + num_classes


# -- the zoo ----------------------------------------------------------------------------------

# Dense tutorials: layer for layer, but with softmax-logits + cross-entropy (see docs/training.md).
_DENSE = dict(optimizer="adam", batch_size=128, schedule="onecycle", augment="none",
              weight_decay=0.0, precision="fp32")


def _mlp(sizes: list[int], num_classes: int, mean: float, std: float):
    from . import nets
    return nets.mlp(sizes, num_classes, mean, std)


@register_model("dense", "784->10 softmax regression (the single dense layer tutorial)",
                lambda c, **_: _dense_count([784], c), **{**_DENSE, "epochs": 5, "lr": 0.01})
def dense(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD):
    return _mlp([784], num_classes, mean, std)


@register_model("mlp100", "784-100-10 ReLU MLP (the classic Keras tutorial)",
                lambda c, **_: _dense_count([784, 100], c), **{**_DENSE, "epochs": 3, "lr": 0.005})
def mlp100(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD):
    return _mlp([784, 100], num_classes, mean, std)


@register_model("mlp128x64", "784-128-64-10 ReLU MLP",
                lambda c, **_: _dense_count([784, 128, 64], c), **{**_DENSE, "epochs": 4, "lr": 0.005})
def mlp128x64(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD):
    return _mlp([784, 128, 64], num_classes, mean, std)


@register_model("mlp150x50", "784-150-50-10 ReLU MLP",
                lambda c, **_: _dense_count([784, 150, 50], c), **{**_DENSE, "epochs": 4, "lr": 0.005})
def mlp150x50(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD):
    return _mlp([784, 150, 50], num_classes, mean, std)


@register_model("convnet", "Keras example convnet: conv32-pool-conv64-pool-dropout-dense10",
                lambda c, **_: (1 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + 64 * 5 * 5 * c + c,
                optimizer="adam", lr=0.003, epochs=8, batch_size=128, schedule="onecycle",
                augment="none", weight_decay=0.0, precision="auto")
def convnet(num_classes: int = 10, mean: float = MNIST_MEAN, std: float = MNIST_STD,
            dropout: float = 0.5):
    from . import nets
    return nets.convnet(num_classes, mean, std, dropout)


@register_model("cnn", "default CNN: 3 conv-BN stages (32-64-128), global max pool", _cnn_count,
                # 7 epochs, the last 2 without augmentation: >= 99.5% on every seed 0-4, chosen on
                # the validation split (docs/records.md, "The default recipe")
                optimizer="sgd", lr=0.05, epochs=7, batch_size=128, schedule="onecycle",
                augment="standard", clean_epochs=2, weight_decay=5e-4, label_smoothing=0.1,
                precision="auto")
def cnn(num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128), depth: int = 1,
        mean: float = MNIST_MEAN, std: float = MNIST_STD, stem: str = "pool"):
    """Conv stages, global max pool, linear head (``nets.CNN``); ``stem="stride"`` starts with a
    strided 4x4 convolution instead of a 3x3 one and a max-pool."""
    if stem not in STEMS:
        raise ConfigError(f"unknown stem {stem!r}; choose from: {', '.join(STEMS)}")
    if not widths or depth < 1:
        raise ConfigError("a cnn needs at least one stage width and depth >= 1")
    from . import nets
    return nets.CNN(num_classes, tuple(widths), mean, std, depth, strided_stem=stem == "stride")
