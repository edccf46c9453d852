"""The HTTP endpoints. Each one reads its input, calls the Predictor loaded at start-up, and maps
the result onto a response schema; decoding, limits and inference live elsewhere."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from .. import __version__
from .inputs import InputError, check_image, read_batch, read_image
from .schemas import (BatchOut, Error, Health, ModelInfo, PredictionOut, batch_item,
                      prediction_out, public_error)

STATIC = Path(__file__).parent / "static"

_IMAGE_SCHEMA = {"type": "string", "format": "binary"}
_B64_SCHEMA = {"type": "string", "description": "data URL (data:image/png;base64,...) or base64"}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": _IMAGE_SCHEMA}}},
    "image/*": {"schema": _IMAGE_SCHEMA},
    "application/json": {"schema": {"type": "object", "required": ["image"],
                                    "properties": {"image": _B64_SCHEMA}}},
}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": _IMAGE_SCHEMA}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": _B64_SCHEMA}}}},
}}}
ERRORS = {code: {"model": Error, "description": text} for code, text in {
    400: "broken image, bad base64 or bad JSON",
    413: "body, image or pixel count over the limit; too many images",
    415: "unsupported media type",
    422: "missing or invalid fields",
}.items()}

TopKQuery = Query(3, ge=1, le=10, description="how many of the best classes to list")
NumberQuery = Query(False, description="read a whole number: segment the digits left to right")
IncludeQuery = Query(None, description="'input': also return the 28x28 image the model saw "
                                       "(`image`, a PNG data URL; off by default)")

api = APIRouter(prefix="/api", tags=["api"])
page = APIRouter(include_in_schema=False)
ops = APIRouter(include_in_schema=False)  # for the operator's tools, not API clients


# An image of at most this many pixels is preprocessed and classified on the event loop itself:
# that takes a few ms at most, and handing it to a thread instead (the hop, then the GIL passing
# back and forth while the loop serves other connections) cost about 10% more CPU per request
# in the load benchmark. Bigger images (photos: tens of ms) go to a thread, so that the loop
# keeps reading other requests and answering /api/health meanwhile.
INLINE_MAX_PIXELS = 512 * 512
# ...and a file of at most this many bytes: a tiny header says nothing about the work in a big
# file (a 1x1 GIF of 5 MB has thousands of frames for the decoder to walk).
INLINE_MAX_BYTES = 512 * 1024


async def _in_model_lane(request: Request, fn, *args, inline: bool = False, **kwargs):
    """Run preprocessing + inference, one request at a time per process: in a worker thread, or
    on the event loop when ``inline`` (small images)."""
    lane = request.app.state.model_lane
    if inline:
        async with lane:
            return fn(*args, **kwargs)
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=lane)


@api.post("/predict", response_model=PredictionOut, responses=ERRORS, openapi_extra=PREDICT_BODY,
          summary="Classify one image (multipart 'file', raw image bytes, or JSON data URL)")
async def predict(request: Request, number: bool = NumberQuery, top_k: int = TopKQuery,
                  include: Literal["input"] | None = IncludeQuery):
    limits = request.app.state.limits
    data = await read_image(request, limits)
    width, height = check_image(data, limits)
    inline = width * height <= INLINE_MAX_PIXELS and len(data) <= INLINE_MAX_BYTES
    predictor = request.app.state.served.predictor  # one model for the request (reload.py)
    pred = await _in_model_lane(request, predictor.predict_one, data,
                                inline=inline, top_k=top_k, number=number)
    if pred.error:
        raise InputError(400, public_error(pred.error))
    request.app.state.metrics.observe_predictions([pred], predictor.classes)
    return prediction_out(pred, predictor.classes, include == "input")


@api.post("/predict/batch", response_model=BatchOut, responses=ERRORS, openapi_extra=BATCH_BODY,
          summary="Classify several images; one result or one error per image")
async def predict_batch(request: Request, number: bool = NumberQuery, top_k: int = TopKQuery,
                        include: Literal["input"] | None = IncludeQuery):
    uploads = await read_batch(request, request.app.state.limits)  # bad images carry .error
    predictor = request.app.state.served.predictor
    good = [up.data for up in uploads if up.error is None]
    results = await _in_model_lane(request, predictor.predict, good, top_k=top_k,
                                   number=number) if good else []
    request.app.state.metrics.observe_predictions(results, predictor.classes)
    preds = iter(results)
    items = [batch_item(i, up.name, up.error or next(preds), predictor.classes,
                        include == "input") for i, up in enumerate(uploads)]
    return BatchOut(count=len(items), results=items)


@api.get("/health", response_model=Health, summary="Liveness")
async def health(request: Request):
    return Health(status="ok", model_loaded=getattr(request.app.state, "served", None) is not None,
                  version=__version__, feedback=getattr(request.app.state, "feedback", None) is not None)


@api.get("/model", response_model=ModelInfo, summary="The loaded model: architecture, metrics, "
                                                     "training config")
async def model_info(request: Request):
    return request.app.state.served.info


@ops.get("/metrics")
async def metrics(request: Request):
    """Prometheus text format: requests, latency, predictions, rejections, the model's id."""
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


@page.get("/")
async def index():
    # The page's own policy: every script, style and request stays on this server.
    return FileResponse(STATIC / "index.html", headers={
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                   "style-src 'self'; script-src 'self'; connect-src 'self'; "
                                   "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        "Cache-Control": "no-cache"})
