"""The two images a feedback row keeps: the original as PNG, and the 28x28 the model saw.

An upload that already is a PNG with nothing in it but the picture is kept byte for byte (the
page's canvas). Anything else is decoded as preprocessing decodes it (first frame, EXIF
orientation applied) and re-encoded as a PNG, without its metadata: a phone photo's EXIF (place,
time, camera) and a PNG's text chunks are not stored. Photos are shrunk to ``MAX_SIDE`` pixels
on their long side first: preprocessing works on at most 320x320 pixels (``Params.work_area``),
and a 12-megapixel photo as a PNG is 20 MB.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from ..preprocess import load_image
from ..preprocess.decode import plain_mode

MAX_SIDE = 1024  # pixels on the long side of a stored original that had to be re-encoded

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that describe the picture itself. Anything else (tEXt, zTXt, iTXt: author, software,
# comments; eXIf: the camera's EXIF, GPS included; tIME) means the PNG is re-encoded.
_PICTURE_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB",
                   b"sBIT", b"bKGD", b"pHYs"}


def _plain_png(data: bytes) -> bool:
    """Is ``data`` a PNG whose chunks all describe the picture (walked from the headers only)?"""
    if not data.startswith(_PNG_SIGNATURE):
        return False
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind not in _PICTURE_CHUNKS:
            return False
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos == len(data)
    return False


def stored_png(data: bytes, max_side: int = MAX_SIDE) -> bytes:
    """The original image as it is stored: ``data`` itself when it is a plain PNG, else the
    decoded image re-encoded as a PNG (at most ``max_side`` pixels a side, no metadata).
    Raises ``ImageError`` for what cannot be decoded."""
    if _plain_png(data):
        return data
    img = plain_mode(load_image(data))
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def input_png(image: np.ndarray) -> bytes:
    """The model's input (28x28 uint8, bright ink on dark) as a greyscale PNG."""
    a = np.asarray(image)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got shape {a.shape} dtype {a.dtype}")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
