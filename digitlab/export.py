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

``quantize="int8"`` writes ``model.int8.onnx`` instead: the same graph through ONNX Runtime's
static quantization (QDQ: 8-bit weights per output channel, 8-bit activations whose ranges are
calibrated on ``CALIBRATION_IMAGES`` MNIST *training* images). Its answers are checked on the
same test images, within looser bounds: at most ``INT8_MAX_DISAGREE`` of them read otherwise
than by PyTorch, probabilities within ``INT8_PROB_TOLERANCE``, accuracy at most
``INT8_MAX_ACCURACY_DROP`` below PyTorch's (the shipped cnn: 99.75% against 99.74% on all
10,000, probabilities within 0.045: docs/server.md#8-bit-model-int8).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
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
from .onnxrt import (FORMAT, FORMAT_VERSION, INPUT_NAME, INT8_FILE, META_ARCHITECTURE,
                     META_CLASSES, META_FORMAT, META_FORMAT_VERSION, META_INPUT, META_KIND,
                     META_MODEL_ID, META_PRECISION, META_VERSION, META_WEIGHT_BITS, ONNX_FILE,
                     OUTPUT_NAME, OnnxModel, model_id, softmax)

# ONNX Runtime 1.20 and later run opset 21; it has every operator the zoo needs.
OPSET = 21
CHECK_IMAGES = 1000  # MNIST test images run through both PyTorch and ONNX Runtime
# Largest difference allowed between PyTorch's and ONNX Runtime's softmax probabilities. Float32
# kernels differ in summation order: the shipped cnn differs by about 1e-6.
PROB_TOLERANCE = 1e-4
MAX_BATCH = 1 << 20  # the batch axis' upper bound as torch.export sees it
QUANTIZE = ("int8",)
CALIBRATION_IMAGES = 1000  # MNIST training images that set the 8-bit activation ranges
# An 8-bit model computes another function: how far it may stray from PyTorch's on the check
# images (the share read otherwise, the largest probability difference, the accuracy lost).
INT8_MAX_DISAGREE = 0.01
INT8_PROB_TOLERANCE = 0.1
INT8_MAX_ACCURACY_DROP = 0.002


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
    precision: str = "fp32"     # "int8" for a quantized export
    accuracy_torch: float = 0.0  # on the check images
    accuracy_onnx: float = 0.0


def export_onnx(model_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                *, quantize: str | None = None, check_images: int = CHECK_IMAGES,
                tolerance: float | None = None) -> ExportReport:
    """Export a model directory (the shipped model when ``None``) to ONNX at ``out`` (default
    ``model_dir/model.onnx``; ``model_dir/model.int8.onnx`` with ``quantize="int8"``), check it
    against PyTorch, and return the figures. ``tolerance``: the largest probability difference
    allowed (default ``PROB_TOLERANCE``, ``INT8_PROB_TOLERANCE`` for int8).

    Raises ``ExportError`` (nothing written) when ONNX Runtime's answers differ from PyTorch's,
    ``ModelDirError`` for a bad model directory."""
    if quantize is not None and quantize not in QUANTIZE:
        raise DigitlabError(f"unknown quantization {quantize!r}; choose from: "
                            f"{', '.join(QUANTIZE)}")
    directory = Path(model_dir) if model_dir is not None else default_model_dir()
    out = Path(out) if out is not None else directory / (INT8_FILE if quantize else ONNX_FILE)
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
        # (7-bit weights: _quantize_int8; onnxrt runs an unmarked 8-bit file's float twin on
        # a CPU without VNNI)
        **({META_PRECISION: quantize, META_WEIGHT_BITS: "7"} if quantize else {}),
    })
    payload = proto.SerializeToString()

    with atomic_path(out) as tmp:  # replaced only if the check passes; else nothing is left
        if quantize:
            _quantize_int8(payload, tmp)
        else:
            tmp.write_bytes(payload)
        size = tmp.stat().st_size
        disagree, diff_logits, diff_probs, acc_torch, acc_onnx = _compare(
            model, OnnxModel(tmp), check_images, quantize, tolerance)
    return ExportReport(out, ident, OPSET, size, check_images, disagree, diff_logits,
                        diff_probs, quantize or "fp32", acc_torch, acc_onnx)


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
def _quiet(everything: bool = False):
    """The exporter warns about optional packages (torchvision) on its loggers and about its own
    deprecations, the quantizer about BatchNorm weights it leaves alone (on the root logger,
    ``everything``); none of that is for the user of `digitlab export`. Errors still raise."""
    logger = logging.getLogger() if everything else logging.getLogger("torch.onnx")
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


def mnist_calibration_images(n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """``n`` bundled MNIST training images drawn at random (``seed``), as float32
    (n, 1, 28, 28) in [0, 1]: what sets an 8-bit model's activation ranges."""
    images = read_idx(bundled_mnist_dir() / "train-images-idx3-ubyte.gz")
    pick = np.random.default_rng(seed).choice(len(images), size=n, replace=False)
    return (images[np.sort(pick)].astype(np.float32) / 255.0)[:, None]


def _quantize_int8(payload: bytes, out: Path) -> None:
    """The float graph ``payload`` -> an 8-bit QDQ graph at ``out`` (metadata kept): ONNX
    Runtime's pre-processing (BatchNorm folded into the convolutions, shapes inferred), then
    its static quantization calibrated on MNIST training images."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            x = mnist_calibration_images()
            self.batches = iter([{INPUT_NAME: x[i:i + 100]} for i in range(0, len(x), 100)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="digitlab-int8-") as tmp, _quiet(everything=True):
        src, pre = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx"
        src.write_bytes(payload)
        # (symbolic shape inference is for transformer graphs; ONNX's own is enough here)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # 7-bit weights (reduce_range): a CPU without 8-bit dot-product instructions (AVX2)
        # adds pairs of 8-bit products in 16 bits, which saturate with full-range weights and
        # cost accuracy there (docs/server.md, 8-bit model); with 7 bits no sum overflows
        quantize_static(str(pre), str(out), Calibration(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)


def _compare(model: torch.nn.Module, onnx_model: OnnxModel, n: int, quantize: str | None,
             tolerance: float | None) -> tuple[int, float, float, float, float]:
    """(different predictions, largest logit and probability differences, PyTorch's and ONNX
    Runtime's accuracy) on ``n`` MNIST test images; ``ExportError`` when the export strays
    from the model further than allowed (``quantize``: an 8-bit export's looser bounds)."""
    x = mnist_test_images(n)
    labels = read_idx(bundled_mnist_dir() / "t10k-labels-idx1-ubyte.gz")[:n]
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
    right_ref = int((ref.argmax(1) == labels).sum())
    right_got = int((got.argmax(1) == labels).sum())
    acc_ref, acc_got = right_ref / n, right_got / n
    if quantize:
        tolerance = INT8_PROB_TOLERANCE if tolerance is None else tolerance
        allowed = int(INT8_MAX_DISAGREE * n)
        worse = right_ref - right_got > int(INT8_MAX_ACCURACY_DROP * n)
    else:
        tolerance = PROB_TOLERANCE if tolerance is None else tolerance
        allowed, worse = 0, False
    if disagree > allowed or worse or not diff_probs <= tolerance:
        raise ExportError(f"ONNX Runtime{' (int8)' if quantize else ''} and PyTorch differ on "
                          f"{n} MNIST test images: {disagree} different predictions (allowed "
                          f"{allowed}), accuracy {acc_got:.2%} against {acc_ref:.2%}, "
                          f"probabilities up to {diff_probs:.3g} apart (tolerance "
                          f"{tolerance:g}), logits up to {diff_logits:.3g}; not written")
    return disagree, diff_logits, diff_probs, acc_ref, acc_got
