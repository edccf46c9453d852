"""Model directories: ``model.safetensors`` + ``config.json``, saved atomically, validated on load.

A model directory describes itself: architecture and its kwargs, input convention and
normalisation, class names, training config, dataset name and checksum, metrics, versions. Predict,
evaluate and serve need nothing else. No pickle is read or written anywhere.

A model directory is untrusted input (one downloaded, one edited by hand): before any module is
built, ``config.json`` is read under size and nesting limits and checked against explicit bounds
(``check_config``: architecture, classes, every architecture option with its type and range,
finite normalisation constants), and the weights file's header is checked against the shapes
that config implies and a total size (``check_weights``, reading the header only). Every
failure is a one-line ``ModelDirError``.

Reading and checking a config needs no torch (``read_config``): a server answering from an
ONNX export never imports it. Functions that build or save modules import it when called.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from . import __version__, safejson
from .errors import ConfigError, ModelDirError
from .io import atomic_path, write_json
from .models import STEMS, create_model, get_spec, list_models

if TYPE_CHECKING:
    from torch import nn

FORMAT = "digitlab-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"

# Bounds on what a model directory may ask for, far beyond anything the zoo trains (the widest
# stage is 128, the deepest 2 convs, the biggest model 0.3 M parameters).
MAX_CONFIG_BYTES = 1024 * 1024       # config.json
MAX_CONFIG_DEPTH = 16                # nesting of its JSON (the deepest real one is 5)
MAX_CLASSES = 1000
MAX_CLASS_NAME = 100                 # characters
MAX_WIDTH = 1024                     # channels (or units) of one stage
MAX_STAGES = 5                       # a cnn halves 28x28 at each stage but the last: 28->14->7->3->1
MAX_DEPTH = 8                        # conv layers per stage
MAX_MEMBERS = 32                     # models in an ensemble
MAX_WEIGHTS_BYTES = 256 * 1024 * 1024  # model.safetensors (64 M float32 parameters)
WEIGHT_DTYPES = {"F32", "F16", "BF16", "F64", "I64"}  # parameters, BatchNorm's step counter


def default_model_dir() -> Path:
    """The pretrained model shipped inside the package."""
    return Path(str(resources.files("digitlab") / "pretrained" / "default"))


def build_config(architecture: str, model_kwargs: dict, classes: list[str], **extra) -> dict:
    """The config.json skeleton every model directory shares."""
    import torch
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
    from safetensors.torch import save_file
    directory = Path(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json(directory / CONFIG, config)
    return directory


def read_config(directory: str | os.PathLike) -> dict:
    """``config.json`` of a model directory, read under limits and checked (``check_config``)."""
    directory = Path(directory)
    if not directory.exists():
        raise ModelDirError(f"{directory}: model directory not found")
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: not a directory")
    path = directory / CONFIG
    if not path.is_file():
        raise ModelDirError(f"{directory}: not a model directory (no {CONFIG})")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ModelDirError(f"{path}: {size} bytes, over the limit of {MAX_CONFIG_BYTES}")
    try:
        cfg = safejson.loads(path.read_bytes(), max_depth=MAX_CONFIG_DEPTH, allow_nan=True)
    except safejson.JSONLimitError as exc:
        raise ModelDirError(f"{path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelDirError(f"{path}: not a digitlab model config")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{path}: format version {cfg.get('format_version')} is not supported "
                            f"by digitlab {__version__} (expects {FORMAT_VERSION})")
    for key in ("architecture", "classes", "model_kwargs"):
        if key not in cfg:
            raise ModelDirError(f"{path}: missing {key!r}")
    try:
        check_config(cfg)
    except ConfigError as exc:
        raise ModelDirError(f"{path}: {exc}") from None
    return cfg


# -- the schema -------------------------------------------------------------------------------

def _fail(where: str, text: str) -> ConfigError:
    return ConfigError(f"{where} {text}")


def _whole(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(where, f"must be a whole number from {lo} to {hi}, got {value!r}")
    return value


def _finite(value: Any, where: str, lo: float = -1e6, hi: float = 1e6,
            positive: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not lo <= value <= hi or (positive and value <= 0)):
        bound = f"{'> 0' if positive else f'>= {lo:g}'} and <= {hi:g}"
        raise _fail(where, f"must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_kwargs(architecture: str, kwargs: Any, where: str) -> None:
    """One architecture's options: known names only, each of its type and within bounds."""
    if not isinstance(kwargs, dict):
        raise _fail(where, f"must be an object, got {type(kwargs).__name__}")
    try:
        spec = get_spec(architecture)
    except ConfigError as exc:
        raise ConfigError(f"incompatible model config: {exc}") from None
    allowed = spec.options()
    for key, value in kwargs.items():
        at = f"{where}.{key}"
        if key not in allowed:
            raise _fail(at, f"is not an option of {architecture!r} (options: "
                            f"{', '.join(allowed)})")
        if key == "widths":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_STAGES:
                raise _fail(at, f"must be a list of 1 to {MAX_STAGES} stage widths, got "
                                f"{_short(value)}")
            for i, w in enumerate(value):
                _whole(w, f"{at}[{i}]", 1, MAX_WIDTH)
        elif key == "depth":
            _whole(value, at, 1, MAX_DEPTH)
        elif key == "mean":
            _finite(value, at, -1e3, 1e3)
        elif key == "std":
            _finite(value, at, 0.0, 1e3, positive=True)
        elif key == "dropout":
            _finite(value, at, 0.0, 0.999)
        elif key == "stem":
            if value not in STEMS:
                raise _fail(at, f"must be one of {', '.join(STEMS)}, got {_short(value)}")
        elif not (value is None or isinstance(value, (bool, str)) and len(str(value)) <= 64
                  or isinstance(value, (int, float)) and math.isfinite(value)
                  and abs(value) <= 1e6):
            raise _fail(at, f"must be a short string, a boolean or a finite number, got "
                            f"{_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_classes(classes: Any, where: str) -> int:
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        raise _fail(where, f"must be a list of 1 to {MAX_CLASSES} class names")
    for i, c in enumerate(classes):
        if not isinstance(c, str) or len(c) > MAX_CLASS_NAME:
            raise _fail(f"{where}[{i}]", f"must be a string of at most {MAX_CLASS_NAME} "
                                         f"characters")
    return len(classes)


def check_config(cfg: dict) -> None:
    """Check a model config against the schema; ``ConfigError`` (one line) names what is wrong.

    Nothing here builds a module or allocates a tensor: architecture options are checked
    against the registry's signatures and the bounds above."""
    n = _check_classes(cfg.get("classes"), "classes")
    if "num_classes" in cfg and cfg["num_classes"] != n:
        raise _fail("num_classes", f"is {cfg['num_classes']!r} but there are {n} classes")
    kind = cfg.get("kind", "single")
    if kind == "ensemble":
        members = cfg.get("members")
        if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
            raise _fail("members", f"must be a list of 1 to {MAX_MEMBERS} member configs")
        for i, m in enumerate(members):
            at = f"members[{i}]"
            if not isinstance(m, dict) or m.get("kind", "single") != "single":
                raise _fail(at, "must be the config of a single model")
            if m.get("architecture") not in list_models():
                raise ConfigError(f"incompatible model config: {at}.architecture "
                                  f"{_short(m.get('architecture'))} is not one of "
                                  f"{', '.join(list_models())}")
            _check_kwargs(m["architecture"], m.get("model_kwargs", {}), f"{at}.model_kwargs")
            if "classes" in m and m["classes"] != cfg["classes"]:
                raise _fail(f"{at}.classes", "differ from the ensemble's")
        for key in ("mean", "std"):
            if cfg["model_kwargs"].get(key) is not None:
                _finite(cfg["model_kwargs"][key], f"model_kwargs.{key}", -1e3, 1e3,
                        positive=key == "std")
    elif kind == "single":
        if not isinstance(cfg.get("architecture"), str):
            raise _fail("architecture", "must be a model name")
        _check_kwargs(cfg["architecture"], cfg["model_kwargs"], "model_kwargs")
    else:
        raise _fail("kind", f"must be 'single' or 'ensemble', got {_short(kind)}")
    threshold = (cfg.get("predict") or {}).get("reject_threshold") if isinstance(
        cfg.get("predict"), dict) else None
    if threshold is not None:
        _finite(threshold, "predict.reject_threshold", 0.0, 1.0)


def check_weights(path: Path, cfg: dict) -> None:
    """Check a weights file against a checked config from its header alone: size, names,
    dtypes and shapes, before the module is built for real (the expected shapes come from the
    config's module built on PyTorch's "meta" device, which allocates nothing)."""
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise ModelDirError(f"{path}: {size} bytes, over the limit of {MAX_WEIGHTS_BYTES}")
    try:
        with safe_open(str(path), "pt") as f:
            found = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape()))
                     for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"{path}: corrupt weights ({exc})") from None
    import torch
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in model_from_config(cfg).state_dict().items()}
    for key in expected.keys() - found.keys():
        raise ModelDirError(f"{path}: weights do not match the architecture (missing {key!r})")
    for key in found.keys() - expected.keys():
        raise ModelDirError(f"{path}: weights do not match the architecture (unexpected "
                            f"{key!r})")
    for key, (dtype, shape) in found.items():
        if dtype not in WEIGHT_DTYPES:
            raise ModelDirError(f"{path}: {key!r} has dtype {dtype}; expected one of "
                                f"{', '.join(sorted(WEIGHT_DTYPES))}")
        if shape != expected[key]:
            raise ModelDirError(f"{path}: weights do not match the architecture ({key!r} is "
                                f"{list(shape)} in the file, {list(expected[key])} for the "
                                f"config)")


def model_from_config(cfg: dict) -> nn.Module:
    """Rebuild the (untrained) module a config describes (``check_config`` it first)."""
    try:
        if cfg.get("kind") == "ensemble":
            from .nets import Ensemble
            return Ensemble([model_from_config(m) for m in cfg["members"]])
        get_spec(cfg["architecture"])
        return create_model(cfg["architecture"], num_classes=len(cfg["classes"]),
                            **cfg["model_kwargs"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ModelDirError(f"incompatible model config: {exc}") from None


def load_model(directory: str | os.PathLike | None = None, device: str = "cpu"
               ) -> tuple[nn.Module, dict]:
    """Load a model directory (the shipped model when ``None``): returns (model in eval mode, config)."""
    from safetensors.torch import load_file
    directory = Path(directory) if directory is not None else default_model_dir()
    cfg = read_config(directory)
    wpath = directory / WEIGHTS
    if not wpath.is_file():
        raise ModelDirError(f"{directory}: missing {WEIGHTS}")
    check_weights(wpath, cfg)
    model = model_from_config(cfg)
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
    from .nets import Ensemble, count_parameters
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
        parameters=count_parameters(ensemble),
        training={"precision": "fp32" if "fp32" in precisions else precisions.pop(),
                  "members": [str(d) for d in member_dirs]},
        dataset=configs[0].get("dataset", {}),
        metrics={},
    )
    return save_model_dir(out, ensemble, cfg)
