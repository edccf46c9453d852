"""The feedback endpoints: ``POST /api/feedback`` stores an image with the digit the user says
it is, ``GET /api/feedback/stats`` counts what is stored, ``DELETE /api/feedback/{id}`` (admin
token) removes a row. Without ``--feedback-db`` each answers 404.

A feedback image passes the same limits as one sent to /api/predict (``inputs.read_image``,
``check_image``), and is read by the served model as /api/predict reads it (the Predictor:
``digitlab.preprocess.preprocess``, then the model): the row keeps the 28x28 the model saw and
the model's id. Database work runs in a thread, off the event loop and off the model lane.
"""

from __future__ import annotations

import logging
from functools import partial

import anyio
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..errors import ImageError
from ..feedback import FeedbackStore, NewFeedback, input_png, stored_png
from .admin import require_admin
from .inputs import InputError, _field, check_image, media_type, read_image
from .ratelimit import client_key, retry_after
from .schemas import Error, FeedbackOut, FeedbackStats, public_error

log = logging.getLogger("digitlab.server")

feedback_api = APIRouter(prefix="/api/feedback", tags=["feedback"])

FEEDBACK_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "label"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "the image as it was predicted (the upload, or the canvas PNG)"},
        "label": {"type": "integer", "minimum": 0, "maximum": 9,
                  "description": "the digit it really is"},
        "predicted": {"type": "integer", "minimum": 0, "maximum": 9,
                      "description": "the digit the page showed (default: what the served "
                                     "model reads now)"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1,
                       "description": "the confidence the page showed"}}}}}}}
FEEDBACK_ERRORS = {code: {"model": Error, "description": text} for code, text in {
    400: "broken image",
    404: "this server does not store feedback",
    413: "body, image or pixel count over the limit",
    415: "not multipart/form-data, or a part that is not an image",
    422: "missing or bad label, predicted or confidence; no digit in the image",
    429: "too many feedback requests from this address (see Retry-After)",
    503: "the feedback database cannot be reached",
}.items()}


class FeedbackForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: int = Field(ge=0, le=9)
    predicted: int | None = Field(None, ge=0, le=9)
    confidence: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)


def _store(request: Request) -> FeedbackStore:
    store = request.app.state.feedback
    if store is None:
        raise HTTPException(404, "this server does not store feedback (start it with "
                                 "--feedback-db PATH|URL)")
    return store


async def _in_db(fn, *args):
    """Run a database call in a worker thread; a database failure is a 503."""
    try:
        return await anyio.to_thread.run_sync(partial(fn, *args))
    except SQLAlchemyError as exc:
        log.error("feedback database error: %s", getattr(exc, "orig", None) or exc)
        raise HTTPException(503, "the feedback database is not available; try again "
                                 "later") from None


def _form_fields(form) -> FeedbackForm:
    fields: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            continue
        if key in fields:
            raise InputError(422, f"{key[:40]!r} given twice")
        if value.strip():  # an empty optional field is an absent one
            fields[key] = value.strip()
    try:
        return FeedbackForm.model_validate(fields)
    except ValidationError as exc:
        raise InputError(422, "; ".join(
            f"{_field(e['loc']) if e['loc'] else 'form'}: {e['msg']}"
            for e in exc.errors()[:5])) from None


def _read(predictor, data: bytes):
    """The served model's reading of the image, and the original to store (model lane)."""
    pred = predictor.predict_one(data, top_k=1)
    if pred.error:
        raise InputError(400, public_error(pred.error))
    if not pred.probabilities:
        raise InputError(422, f"no digit found in the image ({pred.reason}): feedback is kept "
                              f"only for images the model reads")
    try:
        return pred, stored_png(data)
    except ImageError as exc:
        raise InputError(400, public_error(str(exc))) from None


@feedback_api.post("", status_code=201, response_model=FeedbackOut, responses=FEEDBACK_ERRORS,
                   openapi_extra=FEEDBACK_BODY,
                   summary="Store an image with the digit it really is (multipart: file, label)")
async def post_feedback(request: Request):
    store = _store(request)
    wait = request.app.state.feedback_limiter.take(client_key(request))
    if wait:
        raise HTTPException(429, f"too many feedback requests from this address: try again in "
                                 f"{retry_after(wait)} s", headers={"Retry-After": retry_after(wait)})
    kind = media_type(request.headers.get("content-type"))
    if kind != "multipart/form-data":
        raise InputError(415, f"unsupported media type {kind or '(no Content-Type)'!r} for "
                              "feedback: send multipart/form-data with the image in 'file' and "
                              "the digit in 'label'")
    limits = request.app.state.limits
    data = await read_image(request, limits)
    fields = _form_fields(await request.form())  # the form read_image parsed (cached)
    check_image(data, limits)
    served = request.app.state.served  # one model for the whole request, even across a swap
    pred, original = await anyio.to_thread.run_sync(
        partial(_read, served.predictor, data), limiter=request.app.state.model_lane)
    # The page says what it showed; a client that does not gets the served model's answer.
    if fields.predicted is not None:
        predicted, confidence = fields.predicted, fields.confidence
    else:
        predicted, confidence = pred.digit, float(pred.confidence)
    entry = NewFeedback(image_png=original, input_png=input_png(pred.image), label=fields.label,
                        predicted=predicted, confidence=confidence,
                        model_id=served.info.weights_sha256)
    row_id = await _in_db(store.add, entry)
    return FeedbackOut(id=row_id, label=fields.label, predicted=predicted,
                       model_id=served.info.weights_sha256)


@feedback_api.get("/stats", response_model=FeedbackStats, responses={404: FEEDBACK_ERRORS[404]},
                  summary="How much feedback is stored: by label, right and wrong")
async def feedback_stats(request: Request):
    stats = await _in_db(_store(request).stats)
    return FeedbackStats.model_validate(stats.to_dict())


@feedback_api.delete("/{row_id}", status_code=204, dependencies=[Depends(require_admin)],
                     responses={401: {"model": Error, "description": "no admin token"},
                                403: {"model": Error, "description": "wrong admin token"},
                                404: {"model": Error, "description": "no such row, or no "
                                                                     "feedback database"}},
                     summary="Delete one stored image (admin token)")
async def delete_feedback(request: Request, row_id: int):
    deleted = await _in_db(_store(request).delete, [row_id])
    if not deleted:
        raise HTTPException(404, f"no feedback with id {row_id}")
    return Response(status_code=204)
