"""HTTP bodies -> checked image bytes: the three input forms, and the server's limits.

The routes call ``read_image`` (or ``read_batch``) and ``check_image`` and hand the bytes to the Predictor, which does
all decoding and preprocessing. What lives here is only what an untrusted request needs first,
each bounded before the work is done: body size and read time (``BodyLimitMiddleware``: 413
after reading and discarding the rest of an oversized body, so that every client sees the
answer; 408 for a body that stops arriving), JSON parsed under limits on depth, values, items
and string length (``digitlab.safejson``), images opened only in the formats the server reads
and checked from their header for pixels and frames before anything is decoded
(``digitlab.imageformats``), and clear 4xx errors for everything else.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass

import anyio
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .. import safejson
from ..errors import ImageError, ImageLimitError
from ..imageformats import open_image
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
    max_json_depth: int = 8                   # arrays/objects nested in a JSON body (the API uses 2)
    max_json_values: int = 1000               # values and keys in one JSON body
    body_timeout: float = 60.0                # seconds to receive a whole request body
    body_idle_timeout: float = 15.0           # seconds a body may stall between two reads
    drain_bytes: int = 64 * 1024 * 1024       # of a body over the limit read and discarded so the
    #                                           client sees the 413; beyond it, closed unread

    @property
    def max_json_string(self) -> int:
        """Characters of one JSON string: an image at the limit as base64 (4/3), wrapped in
        lines, with a data-URL header."""
        return self.max_upload_bytes * 3 // 2 + 1024


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
    """Refuse what is not an image of a format the server reads, or too big (bytes, pixels,
    frames), by reading only its header (no pixel decoding). Returns its width and height."""
    if not data:
        raise InputError(400, "empty image")
    if len(data) > limits.max_upload_bytes:
        raise InputError(413, f"image is {len(data)} bytes; the limit is {limits.max_upload_bytes}")
    try:
        with open_image(io.BytesIO(data), max_pixels=limits.max_pixels) as im:
            return im.size
    except ImageLimitError as exc:
        raise InputError(413, str(exc)) from None
    except ImageError as exc:
        raise InputError(400, f"cannot read the image: {exc}") from None


async def _json_body(request: Request, model, limits: Limits):
    body = await request.body()
    try:
        payload = safejson.loads(body, max_depth=limits.max_json_depth,
                                 max_values=limits.max_json_values, max_items=limits.max_batch,
                                 max_string=limits.max_json_string)
    except safejson.JSONLimitError as exc:
        raise _json_limit(exc, limits) from None
    except json.JSONDecodeError as exc:
        raise InputError(400, f"invalid JSON: {exc}") from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InputError(422, "; ".join(
            f"{_field(e['loc'])}: {e['msg']}" for e in exc.errors()[:5])) from None


def _field(loc) -> str:
    """Where a validation error is, as one short line (the keys are the client's own text)."""
    text = ".".join(str(p) for p in loc) or "body"
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_limit(exc: safejson.JSONLimitError, limits: Limits) -> InputError:
    """A JSON limit, in the API's terms: images, their size, the body's shape."""
    if exc.kind == "items" and exc.key == "images":
        return InputError(413, f"too many images: more than {limits.max_batch} per request")
    if exc.kind == "string" and exc.key in ("image", "images"):
        return InputError(413, f"image is larger than the limit of {limits.max_upload_bytes} "
                               f"bytes")
    if exc.kind in ("depth", "number"):
        return InputError(400, f"invalid JSON: {exc}")
    return InputError(413, f"JSON body too large: {exc}")


async def _form_files(request: Request, max_files: int) -> list[UploadFile]:
    try:
        form = await request.form(max_files=max_files, max_fields=100)
    except HTTPException as exc:
        if isinstance(exc, InputError) or exc.status_code == 413:
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
        return decode_base64_image((await _json_body(request, ImageJSON, limits)).image)
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
        uploads = [_from_text(t) for t in (await _json_body(request, BatchJSON, limits)).images]
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
    if sum(len(up.data or b"") for up in uploads) > _INLINE_CHECK_BYTES:
        # Header checks of many big images (a GIF's frames are counted) leave the event loop.
        await anyio.to_thread.run_sync(_check_all, uploads, limits)
    else:
        _check_all(uploads, limits)
    return uploads


_INLINE_CHECK_BYTES = 1024 * 1024


def _check_all(uploads: list[Upload], limits: Limits) -> None:
    for up in uploads:
        if up.error is None:
            try:
                check_image(up.data, limits)
            except InputError as exc:
                up.error = exc


class BodyLimitMiddleware:
    """Bound every request body in size and in time, before it is read into memory.

    Over the size limit: 413, as soon as the Content-Length says so or the bytes received pass
    the limit. The rest of the body is read and discarded first (up to ``drain_bytes``, within
    ``body_timeout``): a client that sends its whole body before reading the answer (Python's
    urllib) would otherwise get a connection reset instead of the 413. A client that asked
    ``Expect: 100-continue`` has sent nothing yet and gets the 413 at once. Any other answer
    given before the body was all read (a 415 from the headers, too many multipart parts) waits
    for the rest of the body the same way.
    Too slow: 408 when the body has not all arrived within ``body_timeout`` seconds, or stalls
    for ``body_idle_timeout``. Each of these answers closes the connection.
    """

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
        limits, limit = self.limits, self._limit(scope["path"])
        declared, expect_continue = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
            elif name == b"expect":
                expect_continue = value.strip().lower() == b"100-continue"
        deadline = anyio.current_time() + limits.body_timeout
        if declared is not None and declared > limit:
            if not expect_continue and declared <= limits.drain_bytes:
                await _drain(receive, limits.drain_bytes, deadline)
            return await _send_json(send, 413, f"request body is {declared} bytes, over the "
                                               f"limit of {limit}{self._note()}")
        seen = 0
        state = {"ended": False, "asked": False}  # the body was all read; receive was called

        async def guarded_receive():
            nonlocal seen
            state["asked"] = True
            wait = min(limits.body_idle_timeout, deadline - anyio.current_time())
            with anyio.move_on_after(max(wait, 0)) as timer:
                message = await receive()
            if timer.cancelled_caught:
                state["ended"] = True  # nothing more to wait for
                # Raised inside the route's body read; FastAPI turns it into a JSON answer.
                raise InputError(408, f"request body not received in time (a body must arrive "
                                      f"within {limits.body_timeout:g} s and never stall for "
                                      f"{limits.body_idle_timeout:g} s)", _CLOSE)
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["ended"] = True
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not state["ended"]:
                        await _drain(receive, limits.drain_bytes, deadline)
                        state["ended"] = True
                    raise InputError(413, f"request body is over the limit of {limit} bytes"
                                          f"{self._note()}", _CLOSE)
            return message

        async def guarded_send(message):
            # An answer given before the whole body was read (a 415 from the headers, too many
            # multipart parts): read the rest first, so that the client sees the answer.
            if (message["type"] == "http.response.start" and not state["ended"]
                    and not (expect_continue and not state["asked"])):
                state["ended"] = True
                if not await _drain(receive, limits.drain_bytes, deadline):
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)


_CLOSE = {"connection": "close"}


async def _drain(receive, budget: int, deadline: float) -> bool:
    """Read and discard the rest of a request body: at most ``budget`` bytes, until
    ``deadline`` (event-loop time). True if its end was reached."""
    got = 0
    with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
        while got <= budget:
            message = await receive()
            if message["type"] != "http.request":
                return True
            got += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
    return False


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
