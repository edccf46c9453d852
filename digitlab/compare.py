"""Model directories side by side: one table and one figure of the runs' validation curves.

Everything comes from what ``train`` and ``evaluate`` wrote into each directory: ``config.json``
(architecture, parameter count, training options and time, per-epoch history) and
``metrics.json`` (test accuracy, loss, per-class F1). No torch and no dataset are needed, so a
comparison of finished runs takes a fraction of a second.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import safejson
from .artifacts import read_config
from .errors import ModelDirError
from .io import atomic_write_text, write_json

METRICS = "metrics.json"
MAX_JSON_BYTES = 16 * 1024 * 1024  # metrics.json grows with the classes (a confusion matrix)


@dataclass(frozen=True)
class Run:
    """One model directory, reduced to what a comparison shows."""

    name: str                         # label in the table and the legend
    path: str
    architecture: str
    model_kwargs: dict
    parameters: int | None
    epochs: int | None                # epochs trained (rows of history); None for an ensemble
    train_seconds: float | None       # training loop only (no data loading, no evaluation)
    dataset: str
    tta: bool                         # test metrics with test-time augmentation
    test_accuracy: float
    test_loss: float
    macro_f1: float
    f1: dict[str, float]              # class name -> test F1
    history: list[dict] = field(repr=False)  # per epoch: val_loss, val_acc, ...


def _read_json(path: Path) -> dict:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ModelDirError(f"{path}: {size} bytes, over the limit of {MAX_JSON_BYTES}")
    try:
        doc = safejson.loads(path.read_bytes(), max_depth=16, max_values=2_000_000,
                             allow_nan=True)
    except ValueError as exc:  # malformed JSON or over a limit: one line either way
        raise ModelDirError(f"{path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelDirError(f"{path}: expected a JSON object")
    return doc


def load_run(directory: str | os.PathLike, name: str | None = None) -> Run:
    """Read one model directory; ``ModelDirError`` if it is not one or has no test metrics."""
    d = Path(directory)
    cfg = read_config(d)  # under limits and checked, as every command reads it
    if not (d / METRICS).is_file():
        raise ModelDirError(f"{d}: no test metrics ({METRICS}); write them with "
                            f"`digitlab evaluate --model-dir {d}`")
    m = _read_json(d / METRICS)
    try:
        test, per_class = m["test"], m["per_class"]
        accuracy, loss, macro = float(test["accuracy"]), float(test["loss"]), float(test["macro_f1"])
        f1 = {str(r["class"]): float(r["f1"]) for r in per_class}
    except (KeyError, TypeError, ValueError):
        raise ModelDirError(f"{d / METRICS}: not the test metrics `digitlab evaluate` "
                            f"writes") from None
    training = cfg.get("training") or {}
    history = cfg.get("history") or []
    architecture = str(cfg.get("architecture"))
    if cfg.get("kind") == "ensemble":
        architecture = f"ensemble of {len(cfg.get('members') or [])}"
    return Run(name=name or d.name, path=str(d), architecture=architecture,
               model_kwargs=dict(cfg.get("model_kwargs") or {}), parameters=cfg.get("parameters"),
               epochs=len(history) or None, train_seconds=training.get("train_seconds"),
               dataset=str((m.get("dataset") or {}).get("name", "?")), tta=bool(m.get("tta")),
               test_accuracy=accuracy, test_loss=loss, macro_f1=macro, f1=f1, history=history)


def load_runs(directories: list[str | os.PathLike]) -> list[Run]:
    """Read several model directories, labelled by their names (by their paths where two
    names are the same)."""
    names = [Path(d).name for d in directories]
    return [load_run(d, name=n if names.count(n) == 1 else str(d))
            for d, n in zip(directories, names)]


def _model(run: Run) -> str:
    """The architecture and the options that tell variants apart (not the normalisation)."""
    opts = {k: v for k, v in run.model_kwargs.items() if k not in ("mean", "std")}
    args = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in opts.items())
    return f"{run.architecture} {args}".strip()


def rows(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """The table as (measure, one cell per run) rows, formatted for reading."""
    classes = list(dict.fromkeys(c for r in runs for c in r.f1))

    def cell(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)
    table = [
        ("model", [_model(r) for r in runs]),
        ("parameters", [cell(r.parameters, ",") for r in runs]),
        ("epochs", [cell(r.epochs, "d") for r in runs]),
        ("training time (s)", [cell(r.train_seconds, ".1f") for r in runs]),
        ("test accuracy", [f"{100 * r.test_accuracy:.2f}%" + (" (TTA)" if r.tta else "")
                           for r in runs]),
        ("test loss", [f"{r.test_loss:.4f}" for r in runs]),
        ("macro F1", [f"{r.macro_f1:.4f}" for r in runs]),
    ]
    table += [(f"F1 {c}", [cell(r.f1.get(c), ".4f") for r in runs]) for c in classes]
    if len({r.dataset for r in runs}) > 1:  # figures from different test sets: say so
        table.insert(1, ("test set", [r.dataset for r in runs]))
    return table


def to_text(runs: list[Run]) -> str:
    """The table for a terminal: one column per run, aligned."""
    table = [("", [r.name for r in runs])] + rows(runs)
    first = max(len(k) for k, _ in table)
    widths = [max(len(cells[i]) for _, cells in table) for i in range(len(runs))]
    return "\n".join(f"{k:<{first}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths))
                     for k, cells in table)


def to_markdown(runs: list[Run]) -> str:
    """The table as Markdown: one column per run."""
    lines = ["| | " + " | ".join(r.name for r in runs) + " |",
             "| --- |" + " ---: |" * len(runs)]
    lines += [f"| {k} | " + " | ".join(cells) + " |" for k, cells in rows(runs)]
    return "\n".join(lines) + "\n"


def to_json(runs: list[Run]) -> list[dict]:
    """One object per run with every figure unrounded (histories left out)."""
    return [{k: v for k, v in asdict(r).items() if k != "history"} | {"model": _model(r)}
            for r in runs]


def write(runs: list[Run], out: str | os.PathLike) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.json`` and, when any run has a per-epoch history
    (an ensemble has none), ``validation_curves.png`` into ``out``; returns the paths by kind."""
    from . import plots
    out = Path(out)
    paths = {"markdown": out / "comparison.md", "json": out / "comparison.json"}
    atomic_write_text(paths["markdown"], to_markdown(runs))
    write_json(paths["json"], to_json(runs))
    curves = {r.name: r.history for r in runs if r.history}
    if curves:
        paths["figure"] = plots.validation_curves(curves, out / "validation_curves.png")
    return paths
