"""Classification metrics as plain numbers: accuracy, loss, confusion matrix, per-class P/R/F1."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[true, pred]`` counts (int64)."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class(cm: torch.Tensor, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), torch.zeros_like(tp))
    return [{"class": c, "precision": round(precision[i].item(), 6), "recall": round(recall[i].item(), 6),
             "f1": round(f1[i].item(), 6), "support": int(support[i].item())}
            for i, c in enumerate(classes)]


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Everything evaluate reports, JSON-ready: accuracy, loss, per-class metrics, confusion."""
    labels = labels.long()
    preds = logits.argmax(1)
    cm = confusion_matrix(preds, labels, len(classes))
    rows = per_class(cm, classes)
    return {
        "n": int(len(labels)),
        "accuracy": (preds == labels).double().mean().item() if len(labels) else float("nan"),
        "loss": F.cross_entropy(logits.float(), labels).item() if len(labels) else float("nan"),
        "errors": int((preds != labels).sum().item()),
        "macro_f1": sum(r["f1"] for r in rows) / len(rows),
        "per_class": rows,
        "confusion_matrix": cm.tolist(),
    }
