"""Evaluation: test metrics for a model directory, and the report files written next to it.

``evaluate(model_dir, data)`` computes test accuracy/loss, per-class precision/recall/F1 and the
confusion matrix, and (by default) writes ``metrics.json``, ``confusion_matrix.png``,
``curves.png``, ``samples.png``, ``errors.png`` and ``report.md`` into the model directory.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import plots
from .artifacts import default_model_dir, load_model, read_config
from .data import Dataset, load_dataset
from .errors import ConfigError, DataError, ModelDirError
from .io import atomic_write_text, write_json
from .metrics import classification_report
from .onnxrt import OnnxModel, choose_backend
from .runtime import predict_logits, prepare, resolve_device


def evaluate_dir(model_dir: str | os.PathLike, dataset: Dataset, *, tta: bool = False,
                 device: str = "auto", write: bool = True, backend: str = "torch",
                 precision: str = "auto") -> dict:
    """Evaluate the model in ``model_dir`` on ``dataset``'s test split; returns the metrics dict.
    ``backend`` and ``precision``: as ``Predictor``'s (``auto`` runs ONNX Runtime where the
    directory holds an export, the 8-bit one where it is there and the CPU is fast at it:
    ``onnxrt.onnx_file``; test-time augmentation runs with torch; PyTorch runs at the
    precision the model was trained at)."""
    model_dir = Path(model_dir)
    if dataset.test_images is None or len(dataset.test_images) == 0:
        raise DataError(f"dataset {dataset.name!r} has no test images")
    chosen = choose_backend(model_dir, backend, precision)
    if tta and chosen == "onnxruntime":
        if backend == "onnxruntime" or precision == "int8":
            raise ConfigError("--tta runs with the torch backend only")
        chosen = "torch"
    logits = None
    ran = "fp32"
    if chosen == "onnxruntime":
        try:
            onnx = OnnxModel.from_model_dir(model_dir, precision=precision)
        except ModelDirError:
            if backend != "auto" or precision == "int8":
                raise
            chosen = "torch"  # a stale export: the weights themselves decide
        else:
            ran = onnx.precision
            cfg = read_config(model_dir)
            _check_classes(dataset, cfg)
            logits = torch.from_numpy(onnx.logits_u8(dataset.test_images.numpy()))
    if logits is None:
        dev = resolve_device(device)
        model, cfg = load_model(model_dir, device=str(dev))
        _check_classes(dataset, cfg)
        ran = cfg.get("training", {}).get("precision", "fp32")
        logits = predict_logits(prepare(model, dev), dataset.test_images, precision=ran,
                                tta=tta)
    report = classification_report(logits, dataset.test_labels, cfg["classes"])
    metrics = {
        "model_dir": str(model_dir),
        "architecture": cfg.get("architecture"),
        "dataset": {"name": dataset.name, "checksum": dataset.checksum},
        "tta": tta,
        "backend": chosen,
        "precision": ran,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "test": {k: report[k] for k in ("n", "accuracy", "loss", "errors", "macro_f1")},
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "validation": cfg.get("metrics", {}),
    }
    if write:
        write_report(model_dir, cfg, metrics, dataset, logits)
    return metrics


def _check_classes(dataset: Dataset, cfg: dict) -> None:
    if dataset.num_classes > len(cfg["classes"]):
        raise DataError(f"dataset {dataset.name!r} has {dataset.num_classes} classes but the model "
                        f"was trained on {len(cfg['classes'])}")


def evaluate(model_dir: str | os.PathLike | None = None, data: str | os.PathLike = "mnist", *,
             tta: bool = False, device: str = "auto", write: bool = True,
             backend: str = "auto", precision: str = "auto") -> dict:
    """Evaluate a model directory (the shipped model when None) on a dataset name or folder."""
    model_dir = model_dir if model_dir is not None else default_model_dir()
    return evaluate_dir(model_dir, load_dataset(data), tta=tta, device=device,
                        write=write and Path(model_dir) != default_model_dir(), backend=backend,
                        precision=precision)


def write_report(model_dir: Path, cfg: dict, metrics: dict, dataset: Dataset,
                 logits: torch.Tensor) -> None:
    classes = cfg["classes"]
    images = dataset.test_images.numpy()
    labels = dataset.test_labels.numpy()
    probs = logits.softmax(1)
    conf, preds = probs.max(1)
    preds, conf = preds.numpy(), conf.numpy()

    write_json(model_dir / "metrics.json", metrics)
    plots.confusion_heatmap(np.array(metrics["confusion_matrix"]), classes,
                            model_dir / "confusion_matrix.png",
                            f"Confusion matrix, {dataset.name} test "
                            f"({100 * metrics['test']['accuracy']:.2f}% accurate)")
    history = cfg.get("history") or []
    if history:
        plots.training_curves(history, model_dir / "curves.png")
    # Samples: the first 40 test images (deterministic), red caption when wrong.
    k = min(40, len(images))
    plots.image_grid(images[:k], [f"{classes[p]} ({100 * c:.0f}%)" for p, c in zip(preds[:k], conf[:k])],
                     model_dir / "samples.png", "Test samples: predicted (confidence)",
                     ["black" if p == t else "red" for p, t in zip(preds[:k], labels[:k])])
    wrong = np.flatnonzero(preds != labels)
    worst = wrong[np.argsort(-conf[wrong])][:40]
    plots.image_grid(images[worst], [f"{classes[preds[i]]} ({100 * conf[i]:.0f}%) / {classes[labels[i]]}"
                                     for i in worst],
                     model_dir / "errors.png",
                     f"Most confident mistakes: predicted (confidence) / true — {len(wrong)} errors")
    atomic_write_text(model_dir / "report.md", _report_markdown(cfg, metrics, history, bool(history)))


def _report_markdown(cfg: dict, m: dict, history: list[dict], curves: bool) -> str:
    t = m["test"]
    tr = cfg.get("training", {})
    lines = [
        f"# {cfg.get('architecture')} on {m['dataset']['name']}",
        "",
        f"{cfg.get('description', '')} — {cfg.get('parameters', '?')} parameters.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| test accuracy | {100 * t['accuracy']:.2f}% ({t['n'] - t['errors']}/{t['n']}) |",
        f"| test loss | {t['loss']:.4f} |",
        f"| macro F1 | {t['macro_f1']:.4f} |",
    ]
    if history:
        lines.append(f"| validation accuracy (last epoch) | {100 * history[-1]['val_acc']:.2f}% |")
    if tr:
        lines += [f"| training time | {tr.get('train_seconds', '?')} s on {tr.get('machine', '?')} |",
                  f"| recipe | {tr.get('epochs')} epochs, batch {tr.get('batch_size')}, {tr.get('optimizer')} "
                  f"lr {tr.get('lr')}, {tr.get('schedule')}, augment {tr.get('augment')}, seed {tr.get('seed')} |"]
    lines += ["", "## Per class", "", "| class | precision | recall | F1 | support |",
              "| --- | --- | --- | --- | --- |"]
    for r in m["per_class"]:
        lines.append(f"| {r['class']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |")
    lines += ["", "## Confusion matrix", "", "![confusion matrix](confusion_matrix.png)", ""]
    if curves:
        lines += ["## Training curves", "", "![training curves](curves.png)", ""]
        lines += ["| epoch | train loss | train acc | val loss | val acc | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for h in history:
            lines.append(f"| {h['epoch']} | {h['train_loss']:.4f} | {100 * h['train_acc']:.2f}% | "
                         f"{h['val_loss']:.4f} | {100 * h['val_acc']:.2f}% | {h['seconds']} |")
        lines.append("")
    lines += ["## Samples", "", "![test samples](samples.png)", "",
              "## Most confident mistakes", "", "![errors](errors.png)", ""]
    return "\n".join(lines)
