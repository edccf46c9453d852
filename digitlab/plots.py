"""Report figures (matplotlib, Agg backend): confusion heatmap, curves, sample and error grids.

Each function takes numbers/arrays and a path, writes a PNG and returns the path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .io import atomic_path  # noqa: E402

DPI = 100


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def confusion_heatmap(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Annotated heatmap of counts, colour by row-normalised rate so errors stand out."""
    cm = np.asarray(cm)
    k = len(classes)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(5.0, 0.55 * k + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k), classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (test set)")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    return _save(fig, path)


def training_curves(history: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation."""
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a1.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy loss")
    a1.set_title("Loss")
    a1.legend()
    a2.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train")
    a2.plot(ep, [100 * h["val_acc"] for h in history], "o-", label="validation")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.set_title("Accuracy")
    a2.legend()
    for a in (a1, a2):
        a.grid(alpha=0.3)
        if len(ep) < 15:
            a.set_xticks(ep)
    fig.tight_layout()
    return _save(fig, path)


def validation_curves(histories: dict[str, list[dict]], path: Path) -> Path:
    """Validation loss and accuracy per epoch, one line per run (``digitlab compare``)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, history in histories.items():
        ep = [h["epoch"] for h in history]
        a1.plot(ep, [h["val_loss"] for h in history], "o-", label=name)
        a2.plot(ep, [100 * h["val_acc"] for h in history], "o-", label=name)
    a1.set_ylabel("cross-entropy loss")
    a1.set_title("Validation loss")
    a2.set_ylabel("accuracy (%)")
    a2.set_title("Validation accuracy")
    for a in (a1, a2):
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def image_grid(images: np.ndarray, titles: list[str], path: Path, suptitle: str,
               colors: list[str] | None = None, cols: int = 10) -> Path:
    """Grid of 28x28 uint8 images with a caption each (e.g. 'pred 3 / true 5, 97%').

    Drawn as one mosaic image with text on top: one axes instead of N keeps it fast.
    """
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, (n + cols - 1) // cols)
    cell_w, cell_h, pad = 36, 44, 4  # pixels per cell: image plus room for its caption
    mosaic = np.full((rows * cell_h, cols * cell_w), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * cell_h + cell_h - 28 - pad, c * cell_w + (cell_w - 28) // 2
        mosaic[y:y + 28, x:x + 28] = 255 - np.asarray(images[i], dtype=np.uint8)
    fig, ax = plt.subplots(figsize=(cols * 1.15, rows * 1.35 + 0.5))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        ax.text(c * cell_w + cell_w / 2, r * cell_h + 8, titles[i], ha="center", va="center",
                fontsize=6.5, color=(colors[i] if colors else "black"))
    if n == 0:
        ax.text(cell_w / 2, cell_h / 2, "none", ha="center", va="center")
    ax.set_title(suptitle, fontsize=10)
    return _save(fig, path)
