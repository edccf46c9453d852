"""Prediction on real images: ``Predictor(model_dir).predict(images)`` -> one ``Prediction`` each.

Every image goes through ``preprocess`` (the one MNIST-style normalisation) and the 28x28
results are classified in batches. Large images are decoded and preprocessed in a thread pool
(Pillow and numpy release the GIL for the heavy parts); a long list of files (a folder of small
scans) is preprocessed in forked worker processes while the model classifies earlier batches,
as PyTorch's DataLoader does. A digit whose softmax confidence is below the
rejection threshold - or an image in which preprocessing found no digit - comes back as
``rejected`` with a reason instead of a confident wrong answer. The threshold was chosen on
re-rendered MNIST *training* digits against generated junk (docs/predict.md); a model directory
may carry its own as ``config["predict"]["reject_threshold"]``.

The model runs through ``runtime.predict_logits``, the one inference path: batches of at least
``runtime.BF16_MIN_BATCH`` digits run under bf16 autocast where the hardware is fast at it
(``precision="auto"``: CPUs with native bf16, GPUs), as training does: the model runs 1.6-1.8x
faster on a folder of scans; probabilities move by at most about 0.01. ``precision="fp32"``
keeps every call in float32.

A bad item (unreadable, not an image, empty, truncated) never raises: its ``Prediction`` has
``error`` set and the other items are still predicted.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import glob
import io
import logging
import multiprocessing
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .artifacts import WEIGHTS, default_model_dir, load_model, read_config
from .errors import ConfigError, ImageError, ModelDirError
from .imageformats import IMAGE_SUFFIXES
from .io import atomic_path, write_json
from .onnxrt import OnnxModel, choose_backend, softmax
from .preprocess import ImageSource, Preprocessed, preprocess, segment_digits

log = logging.getLogger(__name__)

# Softmax probability below which a digit is rejected, for a model without its own threshold
# (the shipped model carries 0.35 in its config.json). Chosen by `python benchmarks/realworld.py
# --sweep` on re-rendered MNIST training digits vs generated junk: see docs/predict.md.
DEFAULT_REJECT_THRESHOLD = 0.45
_PARALLEL_MIN = 8  # below this many images a thread pool costs more than it saves
_PARALLEL_MIN_PIXELS = 200 * 200  # ...and for images smaller than this
# From this many files on, preprocessing runs in worker processes: small images are Python-bound
# (threads would fight over the GIL), and starting two workers costs about as much as
# preprocessing 50 small PNGs (docs/predict.md#speed: 1.10x at 128 files, 1.29x at 256).
_PROCESS_MIN = 128
_CPUS = min(4, os.cpu_count() or 1)  # default workers (os.cpu_count costs ~0.1 ms a call)


@dataclass
class Prediction:
    """The answer for one input image (or, in number mode, one row of digits)."""

    path: str | None
    digit: int | None  # None when rejected or on error (number mode: the digit if only one)
    confidence: float  # softmax probability of the top class (number mode: product over digits)
    probabilities: list[float]  # one per class, sums to 1 ([] on error or without a model run)
    top_k: list[tuple[int, float]]
    rejected: bool
    reason: str | None  # why rejected
    error: str | None  # unreadable file etc.
    image: np.ndarray | None  # the 28x28 uint8 image the model saw (number mode: 28 x 28n)
    number: str | None = None  # number mode: the digits read, "?" for an unreadable one
    digits: list["Prediction"] | None = None  # number mode: per-digit results, left to right
    stages: dict[str, np.ndarray] | None = None  # preprocessing stages, when asked for

    def to_dict(self, include_image: bool = False) -> dict[str, Any]:
        """JSON-ready dict (the 28x28 image as a base64 PNG when ``include_image``)."""
        d: dict[str, Any] = {
            "path": self.path,
            "digit": self.digit,
            "confidence": round(float(self.confidence), 6),
            "top_k": [[int(k), round(float(p), 6)] for k, p in self.top_k],
            "number": self.number,
            "reason": self.reason,
            "error": self.error,
            "rejected": self.rejected,
            "probabilities": [round(float(p), 6) for p in self.probabilities],
        }
        if self.digits is not None:
            d["digits"] = [x.to_dict(include_image) for x in self.digits]
        if include_image:
            d["image"] = png_base64(self.image) if self.image is not None else None
        return d


def png_base64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _error(path: str | None, message: str) -> Prediction:
    return Prediction(path, None, 0.0, [], [], False, None, message, None)


def _path_of(item: Any) -> str | None:
    return str(item) if isinstance(item, (str, os.PathLike)) else None


def _as_items(images: Any) -> list[Any]:
    """One image or many: lists/tuples, a batch array (N, H, W) or (N, H, W, C), or a tensor."""
    torch = sys.modules.get("torch")  # a tensor exists only where torch is imported already
    if torch is not None and isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 4 or (images.ndim == 3 and images.shape[2] not in (1, 3, 4)):
            return list(images)
        return [images]
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


class Predictor:
    """A loaded model plus the preprocessing and rejection rules to read digits in images."""

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str = "cpu",
                 reject_threshold: float | None = None, precision: str = "auto",
                 backend: str = "auto", threads: int | None = None):
        """``backend``: ``torch``, ``onnxruntime`` (the directory's ``model.onnx`` or
        ``model.int8.onnx``, without importing torch) or ``auto`` (ONNX Runtime where installed
        and exported; see ``onnxrt.choose_backend``, which also refuses an unknown precision).
        ``precision``: see ``onnxrt.PREDICT_PRECISIONS``; ``self.precision`` says what runs
        (``int8`` or ``fp32`` in ONNX Runtime). ``threads``: ONNX Runtime's intra-op threads
        (default 1)."""
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.backend = choose_backend(self.model_dir, backend, precision)
        self.precision = precision
        if self.backend == "onnxruntime":
            try:
                onnx = OnnxModel.from_model_dir(self.model_dir, threads or 1, precision)
            except ModelDirError as exc:
                if backend != "auto" or precision == "int8":
                    raise
                log.warning("%s; running the model with torch instead", exc)
                self.backend = "torch"
            else:
                self.config = read_config(self.model_dir)
                # the weights' hash, which the export was just checked against (when there)
                self.model_id = onnx.model_id if (self.model_dir / WEIGHTS).is_file() else None
                self.precision = onnx.precision
                self._probs = lambda x, batch_size: softmax(onnx.logits_u8(x, batch_size))
        if self.backend == "torch":
            self.model_id = None  # not hashed here: /api/model hashes the weights when asked
            try:  # torch: imported when a model is loaded, not with this module
                from . import runtime
            except ModuleNotFoundError as exc:
                if exc.name != "torch":
                    raise
                raise ConfigError(f"{self.model_dir}: running it needs PyTorch, which is not "
                                  f"installed (pip install 'digitlab[train]'), or a model.onnx "
                                  f"beside its weights (digitlab export, where PyTorch is)"
                                  ) from None
            model, self.config = load_model(self.model_dir, device)
            self.device = runtime.resolve_device(device)
            self.model = runtime.prepare(model, self.device)
            logits = partial(runtime.predict_logits, self.model, precision=precision)
            self._probs = lambda x, batch_size: logits(x, batch_size=batch_size).softmax(-1).numpy()
        self.classes: list[str] = list(self.config["classes"])
        if reject_threshold is None:
            reject_threshold = (self.config.get("predict") or {}).get(
                "reject_threshold", DEFAULT_REJECT_THRESHOLD)
        if not 0.0 <= float(reject_threshold) <= 1.0:
            raise ConfigError(f"reject threshold must be in [0, 1], got {reject_threshold}")
        self.reject_threshold = float(reject_threshold)

    @property
    def runs(self) -> str:
        """What runs the model, as the CLI's first line says it: ``torch``, ``onnxruntime`` or
        ``onnxruntime (int8)``."""
        return self.backend + (" (int8)" if self.precision == "int8" else "")

    # -- model -------------------------------------------------------------------------------

    def probabilities(self, images_u8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Softmax probabilities (N, classes) for uint8 MNIST-style images (N, 28, 28)."""
        if len(images_u8) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self._probs(images_u8, batch_size)

    def _classified(self, path: str | None, pre: Preprocessed, probs: np.ndarray | None,
                    top_k: int, keep_stages: bool) -> Prediction:
        stages = pre.stages if keep_stages else None
        if probs is None:  # preprocessing found no digit
            return Prediction(path, None, 0.0, [], [], True, pre.reason, None, pre.image,
                              stages=stages)
        order = np.argsort(-probs)[:max(1, top_k)]
        top = [(int(k), float(probs[k])) for k in order]
        best, conf = top[0]
        rejected = conf < self.reject_threshold
        reason = (f"low confidence ({conf:.2f} < {self.reject_threshold:.2f}): not clearly a "
                  f"digit" if rejected else None)
        return Prediction(path, None if rejected else best, conf, [float(p) for p in probs], top,
                          rejected, reason, None, pre.image, stages=stages)

    # -- public API --------------------------------------------------------------------------

    def predict(self, images: ImageSource | Sequence[ImageSource], *, top_k: int = 3,
                number: bool = False, batch_size: int = 256, keep_stages: bool = False,
                progress: Callable[[int], None] | None = None,
                workers: int | None = None) -> list[Prediction]:
        """Predict each image (paths, bytes, PIL images, numpy arrays; one or a list).

        ``number``: read a row of digits as a string (each digit with its own confidence).
        ``keep_stages``: attach the preprocessing stages (for --debug-dir and the web page).
        ``progress`` is called with the count of images finished after each batch.
        Never raises for a bad item: its ``Prediction`` has ``error`` set.
        """
        if top_k < 1:
            raise ConfigError(f"top-k must be >= 1, got {top_k}")
        items = _as_items(images)
        if workers is None:
            workers = _CPUS

        prepare = partial(_prepare, number=number, keep_stages=keep_stages)
        results: list[Prediction] = []
        for chunk, prepared in self._prepared(items, prepare, workers, batch_size):
            results.extend(self._finish(chunk, prepared, top_k, keep_stages, batch_size))
            if progress is not None:
                progress(len(chunk))
        return results

    @staticmethod
    def _prepared(items: list[Any], prepare: Callable[[Any], Any], workers: int,
                  batch_size: int) -> Iterator[tuple[list[Any], list[Any]]]:
        """Yield (chunk, preprocessed chunk) in order, batch_size items at a time."""
        paths = all(isinstance(x, (str, os.PathLike)) for x in items)
        if (workers > 1 and paths and len(items) >= _PROCESS_MIN
                and "fork" in multiprocessing.get_all_start_methods()):
            try:
                pool = multiprocessing.get_context("fork").Pool(workers)
            except OSError:  # no processes allowed here: fall back to this one
                pool = None
            if pool is not None:
                with pool:
                    done = pool.imap(prepare, items, chunksize=16)
                    for start in range(0, len(items), batch_size):
                        chunk = items[start:start + batch_size]
                        yield chunk, [next(done) for _ in chunk]
                return
        threads = (ThreadPoolExecutor(workers) if workers > 1 and len(items) >= _PARALLEL_MIN
                   else None)
        try:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                first = prepare(chunk[0])
                # Threads pay off when decoding dominates (photos); for small images the
                # Python-level work holds the GIL and threads only add contention.
                size = first.size if isinstance(first, Preprocessed) else (
                    first[0].size if isinstance(first, list) and first else (0, 0))
                if threads is not None and size[0] * size[1] >= _PARALLEL_MIN_PIXELS:
                    yield chunk, [first, *threads.map(prepare, chunk[1:])]
                else:
                    yield chunk, [first, *(prepare(x) for x in chunk[1:])]
        finally:
            if threads is not None:
                threads.shutdown()

    def predict_one(self, image: ImageSource, **kw: Any) -> Prediction:
        return self.predict([image], **kw)[0]

    def _finish(self, chunk: list[Any], prepared: list[Any], top_k: int, keep_stages: bool,
                batch_size: int) -> list[Prediction]:
        # One model call for every digit in the chunk, then assemble per item.
        digits: list[Preprocessed] = []
        for p in prepared:
            if isinstance(p, Preprocessed):
                digits.append(p)
            elif isinstance(p, list):
                digits.extend(p)
        ok = [d for d in digits if d.reason is None]
        probs = (self.probabilities(np.stack([d.image for d in ok]), batch_size)
                 if ok else np.zeros((0, len(self.classes)), np.float32))
        by_id = {id(d): probs[i] for i, d in enumerate(ok)}
        out = []
        for item, p in zip(chunk, prepared):
            path = _path_of(item)
            if isinstance(p, ImageError):
                out.append(_error(path, str(p)))
            elif isinstance(p, Preprocessed):
                out.append(self._classified(path, p, by_id.get(id(p)), top_k, keep_stages))
            else:
                parts = [self._classified(path, d, by_id.get(id(d)), top_k, keep_stages)
                         for d in p]
                out.append(_number(path, parts))
        return out


def _prepare(item: Any, number: bool, keep_stages: bool
             ) -> Preprocessed | list[Preprocessed] | ImageError:
    """Preprocess one item (a module-level function, so worker processes can run it)."""
    try:
        if number:
            return segment_digits(item, keep_stages=keep_stages)
        return preprocess(item, keep_stages=keep_stages)
    except ImageError as exc:
        return exc
    except Exception as exc:  # a bug must cost this image only, not the whole folder or request
        log.exception("preprocessing failed")
        return ImageError(f"internal error while reading this image "
                          f"({type(exc).__name__}: {exc}); please report it")


def _number(path: str | None, parts: list[Prediction]) -> Prediction:
    """Combine per-digit predictions of one row into the number's prediction.

    Segmentation already decided that each part is a digit-shaped mark, so a part the model is
    unsure of still contributes its best guess to ``number`` (the per-digit prediction stays
    rejected, and ``reason`` names it); "?" stands for a part preprocessing could not read.
    ``rejected`` means that no digit was found or some part is "?".
    """
    read = [d for d in parts if d.probabilities]
    if not read:  # nothing digit-like at all
        first = parts[0]
        return Prediction(path, None, 0.0, [], [], True, first.reason, None, first.image,
                          number=None, digits=parts, stages=first.stages)
    text = "".join(str(d.top_k[0][0]) if d.top_k else "?" for d in parts)
    conf = float(np.prod([d.confidence for d in parts]))
    reason = None
    for i, d in enumerate(parts):
        if d.rejected:
            what = "unreadable" if not d.top_k else "uncertain"
            reason = f"digit {i + 1} of {len(parts)} {what}: {d.reason}"
            break
    strip = np.concatenate([d.image for d in parts], axis=1)
    single = parts[0] if len(parts) == 1 else None
    return Prediction(path, single.digit if single else None, conf,
                      single.probabilities if single else [], single.top_k if single else [],
                      "?" in text, reason, None, strip, number=text, digits=parts,
                      stages=parts[0].stages)


# ---------------------------------------------------------------------------------------------
# Inputs and outputs for the command line (pure: they return lists and write files).


def expand_inputs(specs: Iterable[str]) -> tuple[list[str], bool]:
    """IMAGE | DIR | GLOB arguments -> file paths (folders: their image files, recursively,
    sorted). A path that matches nothing is kept, so its row reports the error. Returns the
    paths and whether any folder or glob was expanded. Folder walks and ``**`` follow symbolic
    links, but visit each real folder and file once (``walk_files``)."""
    paths: list[str] = []
    expanded = False
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            expanded = True
            paths.extend(sorted(str(f) for f in walk_files(p)
                                if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.exists() or not glob.has_magic(spec):
            paths.append(spec)
        else:
            matches = _glob_files(spec)
            expanded = True
            paths.extend(matches if matches else [spec])
    return paths, expanded


def walk_files(root: Path, hidden: bool = False) -> Iterator[Path]:
    """Every regular file under ``root`` (without names starting with "." unless ``hidden``),
    following symbolic links to folders, each real folder and each real file once: a link
    loop ends the walk of that branch instead of repeating it, and a file reachable by several
    names comes once, under the first name met (folders themselves before the linked ones)."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    folders, links = [root], deque()
    while folders or links:
        folder = folders.pop() if folders else links.popleft()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:  # unreadable or vanished: its files are simply not listed
            continue
        inside = []
        for entry in entries:
            if not hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    (links if entry.is_symlink() else inside).append(Path(entry.path))
                elif entry.is_file():
                    st = entry.stat()
                    if (st.st_dev, st.st_ino) not in seen_files:
                        seen_files.add((st.st_dev, st.st_ino))
                        yield Path(entry.path)
            except OSError:
                continue
        folders.extend(reversed(inside))  # depth first, in name order


def _glob_files(pattern: str) -> list[str]:
    """The files a glob pattern matches, sorted. ``**`` (any folders) is matched over one
    ``walk_files`` of the folder before the first wildcard, not by ``glob``, which follows a
    link loop until the path is too long (two loops: effectively forever)."""
    parts = Path(pattern).parts
    if "**" not in parts:
        return sorted(m for m in glob.glob(pattern) if Path(m).is_file())
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root, rest = Path(*parts[:first]) if first else Path(), parts[first:]
    hidden = any(part.startswith(".") for part in rest)
    return sorted(str(f) for f in walk_files(root, hidden=hidden)
                  if _match_parts(rest, f.relative_to(root).parts))


def _match_parts(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":  # zero or more folders
        return any(_match_parts(pattern[1:], parts[k:]) for k in range(len(parts) + 1))
    return (bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0])
            and _match_parts(pattern[1:], parts[1:]))


def printable(text: str) -> str:
    """A file name (or a message holding one) as it is written to a terminal, CSV or JSON: bytes
    that are not UTF-8, which Python keeps as lone surrogates, become \\xNN escapes."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that came from somewhere else than a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


CSV_FIELDS = ("path", "digit", "confidence", "top_k", "number", "reason", "error")


def row(pred: Prediction, number: bool) -> dict[str, Any]:
    """The documented output record: path, digit, confidence, top_k, number, reason, error
    (plus the per-digit results in number mode)."""
    d = pred.to_dict()
    out = {k: printable(d[k]) if isinstance(d[k], str) else d[k] for k in CSV_FIELDS}
    if number:
        out["digits"] = [{"digit": x.digit, "confidence": round(x.confidence, 6),
                          "top_k": [[k, round(p, 6)] for k, p in x.top_k],
                          "rejected": x.rejected,
                          "reason": printable(x.reason) if x.reason else x.reason}
                         for x in (pred.digits or [])]
    return out


def write_results(path: str | os.PathLike, preds: list[Prediction], number: bool) -> Path:
    """Write predictions as CSV or JSON, by the file's extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    rows = [row(p, number) for p in preds]
    if suffix == ".json":
        return write_json(path, rows)
    if suffix != ".csv":
        raise ConfigError(f"{path}: output must end in .csv or .json")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_FIELDS))
        w.writeheader()
        for r in rows:
            r = {k: r[k] for k in CSV_FIELDS}
            r["top_k"] = " ".join(f"{k}:{p:.4f}" for k, p in r["top_k"])
            w.writerow({k: "" if v is None else v for k, v in r.items()})
    return path


def save_stages(pred: Prediction, directory: str | os.PathLike) -> list[Path]:
    """Write the preprocessing stages of one prediction as numbered PNGs (pipeline order)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    sets = [("", pred.stages or {})]
    if pred.digits and len(pred.digits) > 1:
        sets = [(f"digit{i + 1}_", d.stages or {}) for i, d in enumerate(pred.digits)]
    for prefix, stages in sets:
        for n, (name, img) in enumerate(stages.items()):
            if prefix and name in ("unblocked", "input", "gray", "ink", "mask") \
                    and not prefix.startswith("digit1_"):
                continue  # the whole-image stages are the same for every digit of a number
            target = directory / f"{prefix}{n:02d}_{name}.png"
            with atomic_path(target) as tmp:
                Image.fromarray(np.asarray(img, dtype=np.uint8)).save(tmp)
            written.append(target)
    if pred.image is not None:
        target = directory / "model_input.png"
        with atomic_path(target) as tmp:
            Image.fromarray(pred.image).save(tmp)
        written.append(target)
    return written
