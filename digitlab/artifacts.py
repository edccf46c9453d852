"""Model directories: ``model.safetensors`` + ``config.json``, saved atomically, validated on load.

A model directory describes itself: architecture and its kwargs, input convention and
normalisation, class names, training config, dataset name and checksum, metrics, versions. Predict,
evaluate and serve need nothing else. No pickle is read or written anywhere.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .data import atomic_write_bytes
from .errors import ConfigError, ModelDirError
from .models import Ensemble, create_model, get_spec

FORMAT = "digitlab-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def default_model_dir() -> Path:
    """The pretrained model shipped inside the package."""
    return Path(str(resources.files("digitlab") / "pretrained" / "default"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def build_config(architecture: str, model_kwargs: dict, classes: list[str], **extra) -> dict:
    """The config.json skeleton every model directory shares."""
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "single",
        "architecture": architecture,
        "model_kwargs": model_kwargs,
        "num_classes": len(classes),
        "classes": list(classes),
        # What the model expects: see preprocess.py, which produces exactly this.
        "input": {"size": [28, 28], "channels": 1, "range": [0.0, 1.0],
                  "polarity": "bright ink on dark background",
                  "normalisation": "inside the model (first layer): (x - mean) / std",
                  "mean": model_kwargs.get("mean"), "std": model_kwargs.get("std")},
        "versions": {"digitlab": __version__, "torch": torch.__version__},
    }
    cfg.update(extra)
    return cfg


def save_model_dir(directory: str | os.PathLike, model: nn.Module, config: dict) -> Path:
    """Write weights then config (each atomically); the config's presence marks a complete dir."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = directory / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, directory / WEIGHTS)
    write_json(directory / CONFIG, config)
    return directory


def read_config(directory: str | os.PathLike) -> dict:
    directory = Path(directory)
    if not directory.exists():
        raise ModelDirError(f"{directory}: model directory not found")
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: not a directory")
    path = directory / CONFIG
    if not path.is_file():
        raise ModelDirError(f"{directory}: not a model directory (no {CONFIG})")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelDirError(f"{path}: not a digitlab model config")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{path}: format version {cfg.get('format_version')} is not supported "
                            f"by digitlab {__version__} (expects {FORMAT_VERSION})")
    for key in ("architecture", "classes", "model_kwargs"):
        if key not in cfg:
            raise ModelDirError(f"{path}: missing {key!r}")
    return cfg


def model_from_config(cfg: dict) -> nn.Module:
    """Rebuild the (untrained) module a config describes."""
    try:
        if cfg.get("kind") == "ensemble":
            members = [model_from_config(m) for m in cfg["members"]]
            return Ensemble(members)
        get_spec(cfg["architecture"])
        return create_model(cfg["architecture"], num_classes=len(cfg["classes"]),
                            **cfg["model_kwargs"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ModelDirError(f"incompatible model config: {exc}") from None


def load_model(directory: str | os.PathLike | None = None, device: str = "cpu"
               ) -> tuple[nn.Module, dict]:
    """Load a model directory (the shipped model when ``None``): returns (model in eval mode, config)."""
    directory = Path(directory) if directory is not None else default_model_dir()
    cfg = read_config(directory)
    model = model_from_config(cfg)
    wpath = directory / WEIGHTS
    if not wpath.is_file():
        raise ModelDirError(f"{directory}: missing {WEIGHTS}")
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"{wpath}: corrupt weights ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelDirError(f"{wpath}: weights do not match the architecture "
                            f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    return model.to(device).eval(), cfg


def make_ensemble(member_dirs: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Combine model directories into one ensemble directory (averaged probabilities).

    The result is a model directory like any other: evaluate, predict and serve accept it.
    """
    if len(member_dirs) < 2:
        raise ModelDirError("an ensemble needs at least two model directories")
    models, configs = [], []
    for d in member_dirs:
        m, c = load_model(d)
        models.append(m)
        configs.append(c)
    classes = configs[0]["classes"]
    for d, c in zip(member_dirs, configs):
        if c["classes"] != classes:
            raise ModelDirError(f"{d}: classes {c['classes']} differ from {member_dirs[0]}'s {classes}")
    members = []
    for d, c in zip(member_dirs, configs):
        if c.get("kind") == "ensemble":
            members.extend(c["members"])  # flatten nested ensembles
        else:
            members.append({"architecture": c["architecture"], "model_kwargs": c["model_kwargs"],
                            "classes": classes, "source": str(d),
                            "val_accuracy": (c.get("metrics") or {}).get("val_accuracy")})
    flat = []
    for m in models:
        flat.extend(m.members if isinstance(m, Ensemble) else [m])
    ensemble = Ensemble(flat)
    precisions = {c.get("training", {}).get("precision", "fp32") for c in configs}
    cfg = build_config(
        "ensemble", {"mean": configs[0]["model_kwargs"].get("mean"),
                     "std": configs[0]["model_kwargs"].get("std")}, classes,
        kind="ensemble", members=members,
        description=f"ensemble of {len(flat)} models (mean of softmax probabilities)",
        parameters=sum(p.numel() for p in ensemble.parameters()),
        training={"precision": "fp32" if "fp32" in precisions else precisions.pop(),
                  "members": [str(d) for d in member_dirs]},
        dataset=configs[0].get("dataset", {}),
        metrics={},
    )
    return save_model_dir(out, ensemble, cfg)
