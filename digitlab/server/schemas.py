"""Pydantic request and response models of the HTTP API (they are also what /docs shows)."""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..predict import png_base64

log = logging.getLogger("digitlab.server")


class ImageJSON(BaseModel):
    """One image as JSON: what ``canvas.toDataURL()`` gives, or plain base64 of the file bytes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA..."}]})

    image: str = Field(min_length=1, description="data URL (data:image/png;base64,...) or base64")


class BatchJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(min_length=1, description="data URLs or base64 strings")


class TopK(BaseModel):
    digit: int
    label: str
    probability: float


class PredictionOut(BaseModel):
    """The result for one image (or, in number mode, for one digit of it)."""

    digit: int | None = Field(description="predicted class index; null when rejected")
    label: str | None = Field(description="class name of `digit` (the digit as text for MNIST)")
    confidence: float = Field(description="softmax probability of the top class")
    probabilities: list[float] = Field(description="one per class, summing to 1; uniform when the "
                                                   "image holds no digit (the model did not run, "
                                                   "`top_k` is empty); a number of several digits "
                                                   "has them per digit, under `digits`")
    top_k: list[TopK]
    rejected: bool = Field(description="true when the model is not confident enough or the image "
                                       "holds no digit; `reason` says why")
    reason: str | None = None
    image: str | None = Field(None, description="the 28x28 image the model saw, as a PNG data URL "
                                                "(with `?include=input`; null otherwise)")
    number: str | None = Field(None, description="number mode: the digits read left to right")
    digits: list[PredictionOut] | None = Field(None, description="number mode: one result per digit")


class BatchItem(BaseModel):
    """One image of a batch: a result, or the error that image alone produced."""

    index: int
    filename: str | None = None
    ok: bool
    result: PredictionOut | None = None
    error: str | None = None
    status: int | None = Field(None, description="the HTTP status this error would have had alone")


class BatchOut(BaseModel):
    count: int
    results: list[BatchItem]


class Health(BaseModel):
    status: str
    model_loaded: bool
    version: str
    feedback: bool = Field(False, description="this server stores feedback (POST /api/feedback)")


class ModelInfo(BaseModel):
    model_dir: str = Field(description="the model directory's name (not its path)")
    weights_sha256: str = Field(description="SHA-256 of model.safetensors")
    architecture: str
    kind: str | None = None
    backend: str | None = Field(None, description="what runs the model: torch or onnxruntime")
    precision: str | None = Field(None, description="onnxruntime: int8 (model.int8.onnx) or fp32 "
                                                    "(model.onnx); torch: auto, fp32 or bf16")
    model_kwargs: dict[str, Any] = {}
    classes: list[str]
    parameters: int | None = None
    reject_threshold: float | None = None
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = Field(None, description="the training config the model was "
                                                              "trained with")
    dataset: Any = None
    input: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    limits: dict[str, int | float] = Field(description="this server's request limits (bytes, "
                                                       "pixels, counts; timeouts in seconds)")


class FeedbackOut(BaseModel):
    id: int = Field(description="the stored row's id (give it to the server's admin to have "
                                "the drawing deleted)")
    label: int
    predicted: int | None = Field(description="the model's digit this feedback judges; null "
                                              "when it gave none")
    model_id: str = Field(description="SHA-256 of the weights of the model that answered")


class LabelCounts(BaseModel):
    total: int
    right: int
    wrong: int
    rejected: int


class FeedbackStats(LabelCounts):
    """Stored feedback: ``right`` (the model's digit was the label), ``wrong`` (another digit),
    ``rejected`` (the model gave none); corrections are wrong + rejected."""

    by_label: dict[str, LabelCounts] = Field(description="the same counts for each label 0-9")


class ReloadJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: str | None = Field(None, min_length=1, description="a model directory on the "
                                  "server; default: the one the server was started with")


class ReloadOut(BaseModel):
    model_dir: str = Field(description="the model directory's name (not its path)")
    weights_sha256: str = Field(description="the model now serving")
    previous_sha256: str = Field(description="the model that served before")
    changed: bool


class Error(BaseModel):
    detail: str = Field(description="what went wrong, for a person to read")
    errors: list[dict[str, Any]] | None = Field(None, description="field errors (422 only)")


def prediction_out(pred, classes: list[str], include_input: bool = False) -> PredictionOut:
    """A ``digitlab.predict.Prediction`` as the API shows it; the image the model saw only when
    ``include_input`` (encoding it as a PNG costs about 0.07 ms a digit)."""
    def label(i):
        return classes[i] if i is not None and 0 <= i < len(classes) else None

    probs = [float(p) for p in pred.probabilities]
    if not probs and not (pred.digits and len(pred.digits) > 1):
        # No digit found, so the model did not run: every class equally (un)likely.
        probs = [1.0 / len(classes)] * len(classes)
    return PredictionOut(
        digit=pred.digit, label=label(pred.digit), confidence=float(pred.confidence),
        probabilities=probs,
        top_k=[TopK(digit=int(i), label=label(int(i)), probability=float(p)) for i, p in pred.top_k],
        rejected=bool(pred.rejected), reason=pred.reason,
        image=("data:image/png;base64," + png_base64(pred.image)
               if include_input and pred.image is not None else None),
        number=pred.number,
        digits=([prediction_out(d, classes, include_input) for d in pred.digits]
                if pred.digits is not None else None),
    )


def batch_item(index: int, filename: str | None, outcome, classes: list[str],
               include_input: bool = False) -> BatchItem:
    """One entry of a batch answer: ``outcome`` is the image's Prediction, or the HTTP error
    (anything with ``status_code`` and ``detail``) that refused it before the model ran."""
    if hasattr(outcome, "status_code"):
        return BatchItem(index=index, filename=filename, ok=False, error=str(outcome.detail),
                         status=outcome.status_code)
    if outcome.error:
        return BatchItem(index=index, filename=filename, ok=False,
                         error=public_error(outcome.error), status=400)
    return BatchItem(index=index, filename=filename, ok=True,
                     result=prediction_out(outcome, classes, include_input))


def public_error(message: str) -> str:
    """A preprocessing error as the client gets it: without the decoder's own words (Pillow's
    exception text, in parentheses) or the library's name for in-memory input. The full message
    is logged at debug level."""
    text = message.removeprefix("<bytes>: ")
    text = re.sub(r"\s*\((?:[^()]|\([^()]*\))*\)", "", text)
    if text != message:
        log.debug("image refused: %s", message)
    return text
