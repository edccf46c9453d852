"""Shared fixtures: the bundled MNIST (loaded once) and a small trained model directory."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.data import load_dataset, write_idx
from digitlab.training import TrainConfig, train


@pytest.fixture(scope="session")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, mnist):
    """An mlp100 trained for one quick epoch on 10,000 images (~1 s); ~93% accurate."""
    out = tmp_path_factory.mktemp("models") / "mlp100"
    train(TrainConfig(model="mlp100", epochs=1, subset=10_000, seed=0), out=out, dataset=mnist,
          evaluate_test=False)
    return out


def make_idx_dir(path, n_train=60, n_test=20, n_classes=10, seed=0, gz=True):
    """Write a small random MNIST-format dataset; returns its folder."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(path / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(path / f"{prefix}-labels-idx1-ubyte{ext}",
                  (np.arange(n) % n_classes).astype(np.uint8))
    return path
