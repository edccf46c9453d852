"""Fine-tuning on users' corrections, without forgetting MNIST.

``finetune(model_dir, feedback, out)`` starts from a model directory's weights and recipe and
trains on the feedback images mixed with MNIST replay: each epoch is ``EPOCH_IMAGES`` images of
which a ``replay`` fraction are MNIST training digits and the rest the feedback digits, repeated
(each repeat augmented afresh by the recipe's own augmentation). A seeded slice of the feedback
is kept aside; the result is a normal model directory (``train``'s one loop writes it) whose
report ends with the model's accuracy before and after, on that slice and on the MNIST test set.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .artifacts import CONFIG, load_model, read_config
from .config import AUGMENTS, TrainConfig
from .data import Dataset, load_dataset
from .errors import ConfigError, DataError
from .io import atomic_write_text, write_json
from .runtime import predict_logits, prepare
from .training import Progress, train

EPOCH_IMAGES = 8000  # images per fine-tuning epoch, feedback and replay together
LR_SCALE = 0.1       # the fine-tuning learning rate, as a fraction of the recipe's peak rate


def split_feedback(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out) of ``n`` feedback digits; ``holdout`` of them, seeded, at least
    one on each side when there are two or more."""
    if not 0 <= holdout < 1:
        raise ConfigError(f"holdout must be a fraction in [0, 1), got {holdout}")
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(n * holdout))
    if holdout and n >= 2:
        k = min(max(k, 1), n - 1)
    return np.sort(order[k:]), np.sort(order[:k])


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> float | None:
    if len(x) == 0:
        return None
    return (predict_logits(model, x, precision=precision).argmax(1) == y).float().mean().item()


def _scores(model_dir: str | os.PathLike, sets: dict, precision: str) -> dict:
    """Accuracy of the model in ``model_dir`` on each named (images, labels) set."""
    model = prepare(load_model(model_dir)[0], torch.device("cpu"))
    return {name: _accuracy(model, x, y, precision) for name, (x, y) in sets.items()}


def finetune(model_dir: str | os.PathLike, feedback: Dataset, out: str | os.PathLike, *,
             epochs: int = 10, replay: float = 0.75, holdout: float = 0.1, lr: float | None = None,
             augment: str | None = None, seed: int = 0, mnist: Dataset | None = None, force: bool = False,
             on_progress: Callable[[Progress], None] | None = None,
             on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Fine-tune the model in ``model_dir`` on ``feedback`` (its training images: the digits as
    preprocessing hands them over, labels in MNIST's classes) and write ``out``; returns the
    summary, with ``before`` and ``after`` accuracies on the held-out feedback and MNIST test.
    ``augment``: the augmentation of the fine-tuning run (``AUGMENTS``; default: the model's
    own recipe's). Outlier exposure stays as the model was trained, whatever the augmentation."""
    base = read_config(model_dir)
    if base.get("kind") == "ensemble":
        raise ConfigError(f"{model_dir}: an ensemble; fine-tune one of its members instead")
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1 (got {epochs})")
    if not 0 <= replay < 1:
        raise ConfigError(f"replay must be a fraction in [0, 1), got {replay}")
    if augment is not None and augment not in AUGMENTS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if feedback.train_images is None or len(feedback.train_images) == 0:
        raise DataError(f"{feedback.name}: no feedback images")
    if mnist is None:
        mnist = load_dataset("mnist")
    if list(feedback.classes) != list(base["classes"]):
        # feedback exports always have the folders 0-9; map by name all the same
        lookup = {c: i for i, c in enumerate(base["classes"])}
        missing = sorted(set(feedback.classes) - set(lookup))
        if missing:
            raise DataError(f"{feedback.name}: labels {missing} are not classes of the model")
        remap = torch.tensor([lookup[c] for c in feedback.classes])
        labels = remap[feedback.train_labels]
    else:
        labels = feedback.train_labels

    tr, ho = split_feedback(len(labels), holdout, seed)
    x_fb, y_fb = feedback.train_images[tr], labels[tr]
    x_ho, y_ho = feedback.train_images[ho], labels[ho]
    if len(x_fb) == 0:
        raise DataError(f"{feedback.name}: every feedback image is held out; lower --holdout")
    gen = torch.Generator().manual_seed(seed)
    n_fb = max(len(x_fb), int(EPOCH_IMAGES * (1 - replay)))
    n_replay = int(n_fb * replay / (1 - replay))
    reps = torch.arange(n_fb) % len(x_fb)  # every feedback digit as often as the others
    pick = torch.randint(0, len(mnist.train_images), (n_replay,), generator=gen)
    mixed = Dataset(
        name=f"{feedback.name}+mnist-replay", classes=list(base["classes"]),
        train_images=torch.cat([x_fb[reps], mnist.train_images[pick]]),
        train_labels=torch.cat([y_fb[reps], mnist.train_labels[pick]]),
        test_images=mnist.test_images, test_labels=mnist.test_labels,
        checksum=feedback.checksum, source=feedback.source)

    cfg = TrainConfig.from_record(base.get("training") or {})
    cfg.model, cfg.model_kwargs, cfg.preset = base["architecture"], dict(base["model_kwargs"]), None
    # outlier exposure stays as the model was trained (it keeps rejecting non-digits)
    cfg.outliers = cfg.outlier_exposure
    cfg.epochs, cfg.clean_epochs, cfg.seed = epochs, 0, seed
    cfg.augment = augment or cfg.augment
    cfg.lr = lr if lr is not None else (cfg.lr or 0.05) * LR_SCALE
    cfg.situations = cfg.lookalikes = 0  # the feedback is the situation now
    cfg.teachers = []  # the users' labels teach it now, not the base model's teachers
    cfg.val_size, cfg.subset, cfg.max_steps, cfg.tta = 0, None, None, False
    cfg.init_from, cfg.data = str(model_dir), f"feedback:{feedback.source or feedback.name}"

    precision = cfg.precision or "auto"
    feedback_sets = {"feedback_holdout": (x_ho, y_ho), "feedback_train": (x_fb, y_fb)}
    before = _scores(model_dir, {**feedback_sets, "mnist_test": (mnist.test_images,
                                                                 mnist.test_labels)}, precision)
    t0 = time.perf_counter()
    summary = train(cfg, out=out, dataset=mixed, force=force, on_progress=on_progress,
                    on_epoch=on_epoch)
    seconds = time.perf_counter() - t0
    if isinstance(base.get("predict"), dict):  # the base's rejection threshold, chosen for it
        saved = read_config(out)
        write_json(Path(out) / CONFIG, {**saved, "predict": base["predict"]})
    # (MNIST test: the new directory's own evaluation, which train has just run)
    after = {**_scores(out, feedback_sets, precision), "mnist_test": summary["test"]["accuracy"]}
    result = {"base_model": str(model_dir), "feedback": feedback.source or feedback.name,
              "feedback_images": len(labels), "trained_on": len(x_fb), "held_out": len(x_ho),
              "replay": replay, "epochs": epochs, "lr": cfg.lr, "augment": cfg.augment,
              "seed": seed,
              "seconds": round(seconds, 2), "train_seconds": round(summary["train_seconds"], 2),
              "before": before, "after": after, "config": asdict(cfg)}
    out = Path(out)
    write_json(out / "finetune.json", result)
    report = out / "report.md"
    atomic_write_text(report, report.read_text() + _report_section(result))
    return result


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _report_section(r: dict) -> str:
    b, a = r["before"], r["after"]
    return "\n".join([
        "", "## Fine-tuning", "",
        f"Started from `{Path(r['base_model']).name}`; trained on {r['trained_on']} feedback "
        f"images ({r['held_out']} more held out, seed {r['seed']}) mixed with MNIST replay "
        f"({100 * r['replay']:.0f}% of each epoch), {r['epochs']} epochs at lr {r['lr']:g} with "
        f"{r['augment']} augmentation, "
        f"{r['seconds']:.1f} s.", "",
        "| accuracy | before | after |", "| --- | --- | --- |",
        f"| held-out feedback ({r['held_out']} images) | {pct(b['feedback_holdout'])} | "
        f"{pct(a['feedback_holdout'])} |",
        f"| feedback trained on ({r['trained_on']} images) | {pct(b['feedback_train'])} | "
        f"{pct(a['feedback_train'])} |",
        f"| MNIST test | {pct(b['mnist_test'])} | {pct(a['mnist_test'])} |", ""])
