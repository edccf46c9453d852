"""ONNX export of a model directory: ``export_onnx(model_dir)`` writes ``model.onnx``, checked.

The graph is PyTorch's ``torch.export``-based ONNX exporter's (``dynamo=True``) at opset
``OPSET``, with a dynamic batch axis: input ``image`` float32 ``(N, 1, 28, 28)`` in [0, 1], ink
bright on dark (normalisation is the graph's first step), output ``logits`` ``(N, classes)``; an
ensemble's output is the log of its members' mean probabilities, as in PyTorch. The model's
metadata_props carry what ``digitlab.onnxrt.OnnxModel`` needs and checks: format, class names,
the input convention and the model id (SHA-256 of ``model.safetensors``).

Before the file takes its place, ONNX Runtime runs it on ``CHECK_IMAGES`` MNIST test images
next to the PyTorch model: every argmax must agree and every softmax probability must be within
``PROB_TOLERANCE``, or the export is refused with the figures and nothing is left behind. The
file is written to a temporary name in the target folder, checked there, then moved into place
with ``io.atomic_path``: an existing ``model.onnx`` is either kept or replaced whole.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .artifacts import WEIGHTS, default_model_dir, load_model
from .data import bundled_mnist_dir, read_idx
from .errors import DigitlabError
from .io import atomic_path
from .onnxrt import (FORMAT, FORMAT_VERSION, INPUT_NAME, META_ARCHITECTURE, META_CLASSES,
                     META_FORMAT, META_FORMAT_VERSION, META_INPUT, META_KIND, META_MODEL_ID,
                     META_VERSION, ONNX_FILE, OUTPUT_NAME, OnnxModel, model_id, softmax)

# ONNX Runtime 1.20 and later run opset 21; it has every operator the zoo needs.
OPSET = 21
CHECK_IMAGES = 1000  # MNIST test images run through both PyTorch and ONNX Runtime
# Largest difference allowed between PyTorch's and ONNX Runtime's softmax probabilities. Float32
# kernels differ in summation order: the shipped cnn differs by about 1e-6.
PROB_TOLERANCE = 1e-4
MAX_BATCH = 1 << 20  # the batch axis' upper bound as torch.export sees it


class ExportError(DigitlabError):
    """The exported graph does not compute what the PyTorch model computes."""


@dataclass
class ExportReport:
    path: Path
    model_id: str
    opset: int
    bytes: int
    images: int                 # images compared
    argmax_disagreements: int   # 0 for an accepted export
    max_abs_diff_logits: float
    max_abs_diff_probs: float


def export_onnx(model_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                *, check_images: int = CHECK_IMAGES, tolerance: float = PROB_TOLERANCE
                ) -> ExportReport:
    """Export a model directory (the shipped model when ``None``) to ONNX at ``out`` (default
    ``model_dir/model.onnx``), check it against PyTorch, and return the figures.

    Raises ``ExportError`` (nothing written) when ONNX Runtime's answers differ from PyTorch's,
    ``ModelDirError`` for a bad model directory."""
    directory = Path(model_dir) if model_dir is not None else default_model_dir()
    out = Path(out) if out is not None else directory / ONNX_FILE
    if out.suffix.lower() != ".onnx":
        raise DigitlabError(f"{out}: the output file name must end in .onnx")
    if out.is_dir():
        raise DigitlabError(f"{out}: is a folder; give a file name ending in .onnx")
    if not 1 <= check_images <= 10_000:
        raise DigitlabError(f"check_images must be 1 to 10000, got {check_images}")
    model, cfg = load_model(directory)  # checked, float32, eval mode, on the CPU

    proto = onnx_proto(model)
    ident = model_id(directory / WEIGHTS)
    _set_metadata(proto, {
        META_FORMAT: FORMAT, META_FORMAT_VERSION: str(FORMAT_VERSION), META_MODEL_ID: ident,
        META_CLASSES: json.dumps(list(cfg["classes"])),
        META_INPUT: json.dumps(cfg.get("input") or {}),
        META_ARCHITECTURE: str(cfg["architecture"]), META_KIND: str(cfg.get("kind", "single")),
        META_VERSION: __version__,
    })
    payload = proto.SerializeToString()

    with atomic_path(out) as tmp:  # replaced only if the check passes; else nothing is left
        tmp.write_bytes(payload)
        disagree, diff_logits, diff_probs = _compare(model, OnnxModel(tmp), check_images,
                                                     tolerance)
    return ExportReport(out, ident, OPSET, len(payload), check_images, disagree, diff_logits,
                        diff_probs)


def onnx_proto(model: torch.nn.Module):
    """The ``onnx.ModelProto`` of a float32 model in eval mode, dynamic batch axis, ``OPSET``."""
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _quiet():
        program = torch.onnx.export(
            model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=OPSET, dynamo=True, dynamic_shapes=({0: batch},),
            external_data=False, verbose=False)
    return program.model_proto


@contextlib.contextmanager
def _quiet():
    """The exporter warns about optional packages (torchvision) on its loggers and about its own
    deprecations; none of that is for the user of `digitlab export`. Errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _set_metadata(proto, props: dict[str, str]) -> None:
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def mnist_test_images(n: int) -> np.ndarray:
    """The first ``n`` bundled MNIST test images as float32 (n, 1, 28, 28) in [0, 1]."""
    images = read_idx(bundled_mnist_dir() / "t10k-images-idx3-ubyte.gz")[:n]
    return (images.astype(np.float32) / 255.0)[:, None]


def _compare(model: torch.nn.Module, onnx_model: OnnxModel, n: int, tolerance: float
             ) -> tuple[int, float, float]:
    """(different predictions, largest logit and probability differences) on ``n`` MNIST test
    images; ``ExportError`` when they are not the same model."""
    x = mnist_test_images(n)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).float().numpy()
    got = onnx_model.logits(x)
    if got.shape != ref.shape:
        raise ExportError(f"the ONNX model gives logits of shape {got.shape}, PyTorch "
                          f"{ref.shape}; not written")
    diff_logits = float(np.abs(got - ref).max())
    diff_probs = (float(np.abs(softmax(got) - softmax(ref)).max()) if np.isfinite(got).all()
                  else float("inf"))
    disagree = int((got.argmax(1) != ref.argmax(1)).sum())
    if disagree or not diff_probs <= tolerance:
        raise ExportError(f"ONNX Runtime and PyTorch differ on {n} MNIST test images: "
                          f"{disagree} different predictions, probabilities up to "
                          f"{diff_probs:.3g} apart (tolerance {tolerance:g}), logits up to "
                          f"{diff_logits:.3g}; not written")
    return disagree, diff_logits, diff_probs
