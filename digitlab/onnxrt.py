"""Inference on an exported model with ONNX Runtime, without torch: ``OnnxModel(path).logits(x)``.

``digitlab export`` writes ``model.onnx`` beside ``model.safetensors`` (``digitlab.export``);
this module runs it with numpy and onnxruntime alone, so a server or a batch job can classify
without importing PyTorch. The input is what every digitlab model takes: float32
``(N, 1, 28, 28)`` in ``[0, 1]``, ink bright on dark; normalisation is inside the graph.

An ONNX file is untrusted input like a model directory: its size is bounded before it is
parsed, ONNX Runtime's own parse errors become one-line ``ModelDirError``s, and the digitlab
metadata (format, classes, model id) and the graph's one input and one output are checked
before the model is used. ``model_id`` is the SHA-256 of the ``model.safetensors`` the graph
was exported from; ``OnnxModel.from_model_dir`` refuses a ``model.onnx`` that no longer
matches its directory's weights (a model retrained into the same directory).

``digitlab export --quantize int8`` writes ``model.int8.onnx`` beside it: the same graph with
8-bit weights and activations (ONNX Runtime's static quantization), about 2.5x faster on a CPU
with 8-bit dot-product instructions (x86 VNNI or AMX, ARM's dot product) and 1.1-1.5x on x86
CPUs with AVX2 alone (docs/server.md, 8-bit model). ``onnx_file`` says which of the two a
precision runs: ``auto`` takes the 8-bit one where it is there and the CPU is fast at it
(``int8_fast``). Without VNNI, x86 CPUs add pairs of 8-bit products in 16 bits, which
saturate with full-range weights: ``digitlab export`` writes 7-bit ones and marks the file so
(``weight_bits``), and on such a CPU ``auto`` runs an earlier, unmarked 8-bit file's
``model.onnx`` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .artifacts import MAX_CLASS_NAME, MAX_CLASSES, MAX_WEIGHTS_BYTES, WEIGHTS
from .errors import ConfigError, ModelDirError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import onnxruntime as ort

FORMAT = "digitlab-onnx"
FORMAT_VERSION = 1
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"  # `digitlab export --quantize int8`
INPUT_NAME, OUTPUT_NAME = "image", "logits"
INPUT_SHAPE = (1, 28, 28)  # after the batch axis

# Keys of the ONNX model's metadata_props that digitlab writes (strings; JSON where noted).
META_FORMAT = "digitlab.format"                  # FORMAT
META_FORMAT_VERSION = "digitlab.format_version"  # str(FORMAT_VERSION)
META_MODEL_ID = "digitlab.model_id"              # SHA-256 (hex) of model.safetensors
META_CLASSES = "digitlab.classes"                # JSON list of class names
META_INPUT = "digitlab.input"                    # JSON: the input convention (config["input"])
META_ARCHITECTURE = "digitlab.architecture"      # e.g. "cnn", "ensemble"
META_KIND = "digitlab.kind"                      # "single" | "ensemble"
META_VERSION = "digitlab.version"                # digitlab version that exported it
META_PRECISION = "digitlab.precision"            # "int8" for a quantized export (else absent)
META_WEIGHT_BITS = "digitlab.weight_bits"        # "7": an 8-bit export's weights fit 7 bits

MAX_ONNX_BYTES = 2 * MAX_WEIGHTS_BYTES  # the weights plus the graph
_HEX64 = re.compile(r"[0-9a-f]{64}")


BACKENDS = ("auto", "torch", "onnxruntime")
BACKEND_HELP = ("what runs the model: onnxruntime (the directory's model.onnx or "
                "model.int8.onnx, written by `digitlab export`), torch, or auto (default: "
                "onnxruntime where installed and exported, else torch)")
# What a model runs in at prediction time. ONNX Runtime: int8 runs model.int8.onnx, fp32
# model.onnx, auto the 8-bit one where it is there and the CPU is fast at it (int8_fast), else
# model.onnx. PyTorch: bf16 autocast, float32, or auto (bf16 autocast for big batches on CPUs
# with native bf16: runtime.bf16_enabled).
PREDICT_PRECISIONS = ("auto", "fp32", "bf16", "int8")
PRECISION_HELP = ("auto (default): in ONNX Runtime the 8-bit model.int8.onnx where the "
                  "directory has one and the CPU is fast at it (x86 with AVX2 or VNNI, ARM "
                  "with dot product), else model.onnx; in PyTorch batches of 32+ digits under "
                  "bf16 autocast where the hardware is fast at it. fp32: model.onnx or float32 "
                  "PyTorch; bf16: autocast (PyTorch); int8: model.int8.onnx")
# /proc/cpuinfo flags of 8-bit dot-product instructions: x86 AVX-512 VNNI, AVX-VNNI, AMX; ARM's
# dot product (asimddp). Without them, an x86 CPU with AVX2 still runs ONNX Runtime's 8-bit
# convolutions 1.1-1.5x faster than float ones with 7-bit weights (docs/server.md, 8-bit
# model); other CPUs keep the float model.
_INT8_DOT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}


@lru_cache(maxsize=1)
def cpu_int8() -> str | None:
    """How this CPU runs 8-bit models: ``dot`` (8-bit dot-product instructions), ``avx2``
    (pairs of 8-bit products summed in 16 bits: exact with 7-bit weights), or None (neither,
    or no /proc/cpuinfo to tell: ``auto`` keeps the float model)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    flags = {flag for line in text.splitlines() if line.startswith(("flags", "Features"))
             for flag in line.split(":", 1)[-1].split()}
    if flags & _INT8_DOT_FLAGS:
        return "dot"
    return "avx2" if "avx2" in flags else None


def int8_fast() -> bool:
    """Whether this CPU runs the 8-bit model faster than the float one (``cpu_int8``)."""
    return cpu_int8() is not None


def available() -> bool:
    """Whether ONNX Runtime is installed (without importing it: 20 MiB a process)."""
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_file(model_dir: str | os.PathLike, precision: str = "auto") -> Path:
    """The ONNX file that runs ``model_dir`` at ``precision``: ``model.int8.onnx`` for int8;
    for auto, where it is there and the CPU is fast at it (``int8_fast``), or where it is the
    only export; else ``model.onnx`` (it may not exist)."""
    if precision not in PREDICT_PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from: "
                          f"{', '.join(PREDICT_PRECISIONS)}")
    int8, fp32 = Path(model_dir) / INT8_FILE, Path(model_dir) / ONNX_FILE
    if precision == "int8" or (precision == "auto" and int8.is_file()
                               and (int8_fast() or not fp32.is_file())):
        return int8
    return fp32


def _export_command(model_dir: str | os.PathLike, path: Path) -> str:
    """The command that writes ``path`` (``onnx_file``'s answer) for ``model_dir``."""
    flag = " --quantize int8" if path.name == INT8_FILE else ""
    return f"digitlab export --model-dir {model_dir} --format onnx{flag}"


def choose_backend(model_dir: str | os.PathLike, backend: str = "auto",
                   precision: str = "auto") -> str:
    """Which backend runs the model in ``model_dir``: ``torch`` or ``onnxruntime``. ``auto``
    takes ONNX Runtime where it is installed and the directory holds the file for
    ``precision`` (``onnx_file``; ``digitlab export``); asking for ``onnxruntime`` without
    either is an error that says so, and so is int8 without ONNX Runtime."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")
    path = onnx_file(model_dir, precision)
    if precision == "int8" and backend == "torch":
        raise ConfigError("precision int8 runs in ONNX Runtime (model.int8.onnx): use "
                          "--backend onnxruntime or auto")
    if backend == "torch":
        return "torch"
    if backend == "onnxruntime" or precision == "int8":
        if not available():
            what = "precision int8" if precision == "int8" else "backend onnxruntime"
            raise ConfigError(f"{what}: ONNX Runtime is not installed (pip install onnxruntime)")
        if not path.is_file():
            raise ModelDirError(f"{model_dir}: no {path.name} for the onnxruntime backend; "
                                f"write one with `{_export_command(model_dir, path)}`")
        return "onnxruntime"
    return "onnxruntime" if path.is_file() and available() else "torch"


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits, float32."""
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def model_id(weights: str | os.PathLike) -> str:
    """The id of a model: the SHA-256 (hex) of its weights file, as ``/api/model`` shows it."""
    with open(weights, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _onnxruntime():
    """onnxruntime, imported on first use: a process that only needs ``model_id`` (the server,
    for /api/model) does not pay the runtime's 20 MiB."""
    import onnxruntime
    return onnxruntime


def session_options(threads: int = 1) -> ort.SessionOptions:
    """ONNX Runtime options for a server worker or a batch job: ``threads`` intra-op threads,
    one inter-op thread, sequential execution, every graph optimisation."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}")
    ort = _onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads spin by default, waiting for the next call: in a server whose
    # worker processes share the cores, that is CPU taken from the other workers.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: no optimiser chatter on stderr
    return so


class OnnxModel:
    """An exported digitlab model in an ONNX Runtime session (CPU).

    ``logits(x)``: float32 ``(N, 1, 28, 28)`` in ``[0, 1]`` -> float32 ``(N, classes)``.
    ``classes``, ``model_id`` and ``metadata`` (every ``digitlab.*`` entry, JSON decoded) come
    from the file."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path = Path(path)
        options = session_options(threads)
        if not self.path.is_file():
            raise ModelDirError(f"{self.path}: ONNX model not found" if not self.path.exists()
                                else f"{self.path}: not a file")
        size = self.path.stat().st_size
        if size > MAX_ONNX_BYTES:
            raise ModelDirError(f"{self.path}: {size} bytes, over the limit of {MAX_ONNX_BYTES}")
        try:
            self.session = _onnxruntime().InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelDirError(f"{self.path}: not a readable ONNX model ({first[:200]})") from None
        self.metadata = _read_metadata(self.path, self.session)
        self.classes: list[str] = self.metadata["classes"]
        self.model_id: str = self.metadata["model_id"]
        _check_signature(self.path, self.session, len(self.classes))

    @property
    def precision(self) -> str:
        """``int8`` for a quantized export, else ``fp32``."""
        return "int8" if self.metadata.get("precision") == "int8" else "fp32"

    @property
    def weight_bits(self) -> int | None:
        """An 8-bit export's weight range: 7 where the file says so (``digitlab export`` since
        7-bit weights), else 8; None for a float one."""
        if self.precision != "int8":
            return None
        return 7 if self.metadata.get("weight_bits") == "7" else 8

    @classmethod
    def from_model_dir(cls, directory: str | os.PathLike, threads: int = 1,
                       precision: str = "auto") -> OnnxModel:
        """``DIR/model.onnx`` or ``DIR/model.int8.onnx`` (``onnx_file``), refused if it was
        exported from other weights than ``DIR/model.safetensors`` (when that file is there).
        With ``auto``, a stale ``model.int8.onnx`` gives way to ``model.onnx`` (a model
        retrained in place and exported again without ``--quantize``), with a warning, and so
        does one with full-range weights on a CPU without VNNI (``weight_bits``)."""
        directory = Path(directory)
        path = onnx_file(directory, precision)
        if not path.is_file():
            raise ModelDirError(f"{directory}: no {path.name}; write one with "
                                f"`{_export_command(directory, path)}`")
        model = cls(path, threads)
        weights = directory / WEIGHTS
        stale = weights.is_file() and model_id(weights) != model.model_id
        # an 8-bit export from before 7-bit weights: this CPU's 16-bit sums saturate on it
        inexact = model.weight_bits == 8 and cpu_int8() == "avx2"
        if not (stale or inexact):
            return model
        why = (f"exported from other weights than {weights}" if stale else
               "full-range 8-bit weights, which this CPU (no VNNI) computes inexactly")
        fix = "export again with --quantize int8" + ("" if stale else " for 7-bit weights")
        if precision == "auto" and path.name == INT8_FILE and (directory / ONNX_FILE).is_file():
            log.warning("%s: %s; running %s instead (%s)", path, why, ONNX_FILE, fix)
            return cls.from_model_dir(directory, threads, "fp32")
        if stale:
            raise ModelDirError(f"{path}: exported from other weights than {weights} (the model "
                                f"was retrained or replaced); export it again")
        log.warning("%s: %s: answers may differ from the float model's; %s", path, why, fix)
        return model

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(N, classes)`` for images ``x``: float32 ``(N, 1, 28, 28)`` in [0, 1]."""
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            kind = f"{x.dtype} array" if isinstance(x, np.ndarray) else type(x).__name__
            raise ConfigError(f"expected a float32 array of images in [0, 1], got a {kind}")
        if x.ndim != 4 or x.shape[1:] != INPUT_SHAPE:
            raise ConfigError(f"expected images of shape (N, 1, 28, 28), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(x)})[0]

    def logits_u8(self, images_u8: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Logits for uint8 MNIST-style images ``(N, 28, 28)``, ``batch_size`` at a time."""
        out = [self.logits((images_u8[i:i + batch_size, None].astype(np.float32) / 255.0))
               for i in range(0, len(images_u8), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax of ``logits(x)`` (for an ensemble: its mean probabilities)."""
        return softmax(self.logits(x))


def _read_metadata(path: Path, session: ort.InferenceSession) -> dict:
    props = session.get_modelmeta().custom_metadata_map
    if props.get(META_FORMAT) != FORMAT:
        raise ModelDirError(f"{path}: not a digitlab ONNX export (no {META_FORMAT} = {FORMAT} in "
                            f"its metadata); write one with `digitlab export --format onnx`")
    version = props.get(META_FORMAT_VERSION)
    if version != str(FORMAT_VERSION):
        raise ModelDirError(f"{path}: digitlab ONNX format version {version!r} is not "
                            f"supported (expects {FORMAT_VERSION})")
    meta: dict = {}
    for key, value in props.items():
        if not key.startswith("digitlab."):
            continue
        name = key.removeprefix("digitlab.")
        if key in (META_CLASSES, META_INPUT):
            try:
                value = json.loads(value)
            except ValueError:
                raise ModelDirError(f"{path}: metadata {key} is not valid JSON") from None
        meta[name] = value
    classes = meta.get("classes")
    if (not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES
            or not all(isinstance(c, str) and len(c) <= MAX_CLASS_NAME for c in classes)):
        raise ModelDirError(f"{path}: metadata {META_CLASSES} must be a list of 1 to "
                            f"{MAX_CLASSES} class names")
    if not isinstance(meta.get("model_id"), str) or not _HEX64.fullmatch(meta["model_id"]):
        raise ModelDirError(f"{path}: metadata {META_MODEL_ID} must be a SHA-256 (64 hex "
                            f"digits)")
    return meta


def _check_signature(path: Path, session: ort.InferenceSession, num_classes: int) -> None:
    """One float input (batch, 1, 28, 28) and one float output (batch, classes)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelDirError(f"{path}: expected one input and one output, found {len(inputs)} "
                            f"and {len(outputs)}")
    (i,), (o,) = inputs, outputs
    if i.name != INPUT_NAME or i.type != "tensor(float)" or tuple(i.shape[1:]) != INPUT_SHAPE:
        raise ModelDirError(f"{path}: input {i.name!r} is {i.type} {i.shape}; expected "
                            f"{INPUT_NAME!r} float (batch, 1, 28, 28)")
    if o.type != "tensor(float)" or len(o.shape) != 2 or o.shape[1] != num_classes:
        raise ModelDirError(f"{path}: output {o.name!r} is {o.type} {o.shape}; expected float "
                            f"(batch, {num_classes}) for {num_classes} classes")
    if isinstance(i.shape[0], int) or isinstance(o.shape[0], int):
        raise ModelDirError(f"{path}: the batch axis is fixed ({i.shape[0]}); a digitlab export "
                            f"has a dynamic one")
