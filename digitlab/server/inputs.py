"""HTTP bodies -> checked image bytes: the three input forms, and the server's limits.

The routes call ``read_images`` and ``check_image`` and hand the bytes to the Predictor, which does
all decoding and preprocessing. What lives here is only what an untrusted request needs first:
body-size limits (``BodyLimitMiddleware``), a pixel-count check read from the image header before
anything is decoded (decompression bombs), and clear 4xx errors for everything else.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .schemas import BatchJSON, ImageJSON

# A multipart part may say application/octet-stream (Python clients, some browsers) or nothing.
_GENERIC_TYPES = {"", "application/octet-stream"}
_FILE_FIELDS = ("file", "files", "image", "images")


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 5 * 1024 * 1024   # one image (and the body of /api/predict), bytes
    max_batch_bytes: int = 25 * 1024 * 1024   # the whole body of /api/predict/batch, bytes
    max_pixels: int = 40_000_000              # width x height read from the header, before decoding
    max_batch: int = 32                       # images per batch request


class InputError(HTTPException):
    """A request the server refuses, with the status and message the client gets."""


@dataclass
class Upload:
    name: str | None
    data: bytes | None = None
    error: InputError | None = None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _unsupported(kind: str) -> InputError:
    return InputError(415, f"unsupported media type {kind!r}: send an image (image/png, image/jpeg, "
                           "...), multipart/form-data with a 'file' field, or JSON "
                           '{"image": "<data URL or base64>"}')


def decode_base64_image(text: str) -> bytes:
    """A data URL (``data:image/png;base64,...``) or bare base64 -> bytes."""
    text = text.strip()
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep:
            raise InputError(400, "malformed data URL: no ',' after the header")
        params = header[5:].split(";")
        kind = params[0].strip().lower()
        if kind and not kind.startswith("image/"):
            raise _unsupported(kind)
        if "base64" not in (p.strip().lower() for p in params[1:]):
            raise InputError(400, "data URL must be base64-encoded (data:image/png;base64,...)")
        text = payload
    # Line breaks and spaces (MIME-wrapped base64) are harmless; anything else is an error.
    text = "".join(text.split())
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(400, "invalid base64 in 'image'") from None
    if not data:
        raise InputError(400, "empty image")
    return data


def check_image(data: bytes, limits: Limits) -> tuple[int, int]:
    """Refuse what is not an image, or too big, by reading only the header (no pixel decoding).
    Returns the image's width and height."""
    if not data:
        raise InputError(400, "empty image")
    if len(data) > limits.max_upload_bytes:
        raise InputError(413, f"image is {len(data)} bytes; the limit is {limits.max_upload_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:
        raise InputError(413, f"image refused: {exc}") from None
    except UnidentifiedImageError:
        raise InputError(400, "cannot read the image: not a format Pillow can decode "
                              "(PNG, JPEG, GIF, BMP, WebP, TIFF, ...)") from None
    except Exception as exc:  # Pillow raises many kinds on truncated or hostile headers
        raise InputError(400, f"cannot read the image: {type(exc).__name__}: {exc}") from None
    if width * height > limits.max_pixels:
        raise InputError(413, f"image is {width}x{height} = {width * height} pixels; the limit is "
                              f"{limits.max_pixels}")
    return width, height


async def _json_body(request: Request, model):
    body = await request.body()
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(400, f"invalid JSON: {exc}") from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InputError(422, "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        ) from None


async def _form_files(request: Request, max_files: int) -> list[UploadFile]:
    try:
        form = await request.form(max_files=max_files, max_fields=100)
    except HTTPException as exc:
        if exc.status_code == 413:
            raise
        if "Too many files" in str(exc.detail):
            raise InputError(413, f"too many images: at most {max_files} per request") from None
        raise InputError(400, f"malformed multipart body: {exc.detail}") from None
    return [v for key in _FILE_FIELDS for v in form.getlist(key) if isinstance(v, UploadFile)]


async def _upload(part: UploadFile, limits: Limits) -> Upload:
    kind = media_type(part.content_type)
    if kind not in _GENERIC_TYPES and not kind.startswith("image/"):
        return Upload(part.filename, error=_unsupported(kind))
    data = await part.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        return Upload(part.filename, error=InputError(
            413, f"image is larger than the limit of {limits.max_upload_bytes} bytes"))
    return Upload(part.filename, data)


def _from_text(text: str) -> Upload:
    try:
        return Upload(None, decode_base64_image(text))
    except InputError as exc:
        return Upload(None, error=exc)


async def read_image(request: Request, limits: Limits) -> bytes:
    """The one image of a /api/predict request, in any of the three forms (errors raise)."""
    kind = media_type(request.headers.get("content-type"))
    if kind.startswith("image/") or kind == "application/octet-stream":
        return await request.body()
    if kind == "application/json":
        return decode_base64_image((await _json_body(request, ImageJSON)).image)
    if kind == "multipart/form-data":
        files = await _form_files(request, max_files=1)
        if not files:
            raise InputError(422, "multipart body has no file: send the image in a field named "
                                  "'file'")
        upload = await _upload(files[0], limits)
        if upload.error:
            raise upload.error
        return upload.data
    raise _unsupported(kind or "(no Content-Type)")


async def read_batch(request: Request, limits: Limits) -> list[Upload]:
    """The images of a batch request, each checked; one that cannot be used carries its error."""
    kind = media_type(request.headers.get("content-type"))
    if kind == "application/json":
        uploads = [_from_text(t) for t in (await _json_body(request, BatchJSON)).images]
    elif kind == "multipart/form-data":
        uploads = [await _upload(p, limits)
                   for p in await _form_files(request, max_files=limits.max_batch)]
    else:
        raise InputError(415, f"unsupported media type {kind or '(no Content-Type)'!r} for a batch: "
                              "send multipart/form-data with one 'files' field per image, or JSON "
                              '{"images": ["<data URL or base64>", ...]}')
    if not uploads:
        raise InputError(422, "no images in the request")
    if len(uploads) > limits.max_batch:
        raise InputError(413, f"too many images: {len(uploads)} > {limits.max_batch} per request")
    for up in uploads:
        if up.error is None:
            try:
                check_image(up.data, limits)
            except InputError as exc:
                up.error = exc
    return uploads


class BodyLimitMiddleware:
    """Answer 413 as soon as a request body passes its limit, before it is all read into memory."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits

    def _limit(self, path: str) -> int:
        if path.rstrip("/").endswith("/batch"):
            return self.limits.max_batch_bytes
        # Room for the multipart envelope or base64's 4/3 growth around one image at the limit.
        return self.limits.max_upload_bytes * 4 // 3 + 64 * 1024

    def _note(self) -> str:
        return f" (one image may be up to {self.limits.max_upload_bytes} bytes)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self._limit(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    return await _send_json(send, 413, f"request body is {declared} bytes, over "
                                                       f"the limit of {limit}{self._note()}")
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Raised inside the route's body read; FastAPI turns it into a JSON 413.
                    raise InputError(413, f"request body is over the limit of {limit} bytes"
                                          f"{self._note()}")
            return message

        await self.app(scope, limited_receive, send)


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
