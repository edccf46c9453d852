"""Decoding: any path, bytes, PIL image or array -> a float32 working image.

Every format Pillow reads (first frame, EXIF orientation applied), 1/8/16-bit, grey, RGB(A),
palette, CMYK. Big images shrink to a working size with area interpolation; crops (form cells,
thumbnails) are enlarged instead, so that 8-16 px digits have strokes to measure. A plain PNG
(8-bit grey, RGB or either with alpha, nothing but its pixels) is decoded by OpenCV in one call
instead: the same pixels, without Pillow's Python per chunk and its copies. An image with no
colour in it (grey stored as RGB, a canvas's dark strokes on white) goes on as one channel.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError
from ..imageformats import check_regular_file, open_image
from .params import Params

log = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


# Where a JPEG decoded at reduced scale keeps its own size (width, height, EXIF turn applied)
_FULL_SIZE = "digitlab.full_size"


def _open_stream(fp: Any, name: str, draft: int | None) -> Image.Image:
    """Open one of the formats digitlab reads (``imageformats.open_image``: an explicit format
    list, frame counts bounded) at its first frame; decode it, EXIF orientation applied."""
    img = open_image(fp, name)
    try:
        if draft and img.format == "JPEG":
            # JPEG decodes at 1/2..1/8 scale for free (each 8x8 block's transform scaled down:
            # an area average); the scale kept leaves at least `draft` pixels, shaped as the
            # image is, so that shrinking to the working size still averages areas.
            w, h = img.size
            s = min(1.0, (draft / max(1, w * h)) ** 0.5)
            img.draft(img.mode if img.mode in ("L", "RGB") else "RGB",
                      (max(1, math.ceil(w * s)), max(1, math.ceil(h * s))))
            if img.size != (w, h):
                img.info[_FULL_SIZE] = (w, h)
        img.load()
        if "exif" in img.info or img.format in ("TIFF", "MPO"):  # parsing EXIF costs ~30 us
            turned = ImageOps.exif_transpose(img)
            if _FULL_SIZE in img.info and turned.size != img.size:  # a quarter turn
                turned.info[_FULL_SIZE] = img.info[_FULL_SIZE][::-1]
            img = turned
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on corrupt data
        # (TypeError, KeyError, struct.error...); the decoder's own words stay in the log
        log.debug("decoding %s failed: %r", name, exc)
        raise ImageError(f"{name}: truncated or corrupt image data") from None
    return img


def array_to_image(arr: np.ndarray, name: str = "array") -> Image.Image:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise ImageError(f"{name}: expected an HxW or HxWx(1|3|4) image array, got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise ImageError(f"{name}: unsupported array dtype {a.dtype}")
        f = a.astype(np.float32)
        if not np.isfinite(f).all():
            raise ImageError(f"{name}: array contains NaN or infinite values")
        if np.issubdtype(a.dtype, np.floating):
            top = 1.0 if f.max(initial=0.0) <= 1.0 else 255.0
        elif a.dtype.itemsize >= 2 and f.max(initial=0.0) > 255:
            top = 65535.0 if f.max() > 4095 else 4095.0  # 16-bit, or 12-bit sensor data
        else:
            top = 255.0
        a = np.clip(np.rint(f * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that change nothing in the pixels Pillow decodes, nor anything else it reports
# (physical size, modification time)
_PLAIN_ANCILLARY = {b"pHYs", b"tIME"}
# A file read whole to look at it as a plain PNG (bigger ones are photos, where the decoding
# itself dominates)
_PLAIN_PNG_MAX_BYTES = 1 << 20
# PNG colour types decoded that way, and the channels of what comes back: grey; RGB; grey with
# alpha and RGBA both as RGBA, as ``plain_mode`` makes Pillow's LA and RGBA (a canvas's export)
_PLAIN_CHANNELS = {0: 1, 2: 3, 4: 4, 6: 4}


def _plain_png(data: bytes) -> np.ndarray | None:
    """The pixels of a plain PNG - 8-bit grey, RGB, grey with alpha or RGBA, not interlaced;
    IHDR, then only physical size or time chunks, then one run of image data, then IEND, every
    CRC right - decoded by OpenCV's libpng in one call: (H, W), (H, W, 3) RGB or (H, W, 4) RGBA
    uint8, what Pillow decodes from such a file (``plain_mode``'s RGBA for grey with alpha).
    None for anything else (palettes, transparency chunks, 16 bits, colour profiles, text, EXIF,
    animation, damage, a size over Pillow's limit): those take Pillow's way, whose messages and
    behaviour stay the reference."""
    n = len(data)
    if n < 8 + 25 + 12 or not data.startswith(_PNG_SIGNATURE):
        return None
    view = memoryview(data)
    kinds: list[bytes] = []
    pos = 8
    while pos + 12 <= n and len(kinds) < 1024:
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n:
            return None
        if zlib.crc32(view[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        kinds.append(kind)
        pos = end
        if kind == b"IEND":
            break
    if pos != n or len(kinds) < 3 or kinds[0] != b"IHDR" or kinds[-1] != b"IEND":
        return None
    body = kinds[1:-1]
    if b"IDAT" not in body:
        return None
    first = body.index(b"IDAT")
    if (any(k not in _PLAIN_ANCILLARY for k in body[:first])
            or any(k != b"IDAT" for k in body[first:])):
        return None
    length, _, w, h, depth, colour, compression, filtering, interlace = struct.unpack_from(
        ">I4sIIBBBBB", data, 8)
    if (length != 13 or depth != 8 or colour not in _PLAIN_CHANNELS or compression or filtering
            or interlace or not 0 < w * h <= (Image.MAX_IMAGE_PIXELS or 0)):
        return None
    try:
        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    channels = _PLAIN_CHANNELS[colour]
    if a is None or a.dtype != np.uint8 or a.shape != ((h, w) if channels == 1 else (h, w, channels)):
        return None
    if channels == 1:
        return a
    return cv2.cvtColor(a, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA)


def load_pixels(source: ImageSource, *, draft: int | None = None) -> Image.Image | np.ndarray:
    """``load_image``, except that a plain PNG (bytes, or a file up to
    ``_PLAIN_PNG_MAX_BYTES``) comes back as its pixel array (see ``_plain_png``)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        a = _plain_png(bytes(source))
        if a is not None:
            return a
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if check_regular_file(path).st_size <= _PLAIN_PNG_MAX_BYTES:
            try:
                with open(path, "rb") as f:
                    data = f.read(_PLAIN_PNG_MAX_BYTES + 1)
            except PermissionError:
                raise ImageError(f"{path}: permission denied") from None
            a = _plain_png(data)
            if a is not None:
                return a
    return load_image(source, draft=draft)


def image_size(img: Image.Image | np.ndarray) -> tuple[int, int]:
    """Width and height of ``load_pixels``' result."""
    return (img.shape[1], img.shape[0]) if isinstance(img, np.ndarray) else img.size


def full_size(img: Image.Image | np.ndarray) -> tuple[int, int]:
    """Width and height of the picture itself: a JPEG decoded at reduced scale (``draft``)
    reports the size it is stored at, so that boxes can be given in its own pixels."""
    if isinstance(img, Image.Image) and _FULL_SIZE in img.info:
        return img.info[_FULL_SIZE]
    return image_size(img)


def load_image(source: ImageSource, *, draft: int | None = None) -> Image.Image:
    """Decode a path, bytes, PIL image or array into a PIL image (first frame, EXIF applied).

    ``draft`` lets big JPEGs decode at reduced scale (never below ``draft`` pixels in all).
    Raises ``ImageError`` with a one-line message for anything that is not a readable image.
    """
    if isinstance(source, Image.Image):
        img = source
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        return ImageOps.exif_transpose(img) if img.getexif() else img
    if isinstance(source, np.ndarray):
        return array_to_image(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("<bytes>: empty image data (0 bytes)")
        return _open_stream(io.BytesIO(data), "<bytes>", draft)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        check_regular_file(path)  # (a FIFO would block, a device never ends)
        try:
            with open(path, "rb") as f:
                return _open_stream(f, str(path), draft)
        except PermissionError:
            raise ImageError(f"{path}: permission denied") from None
    raise ImageError(f"unsupported input type {type(source).__name__} (expected a path, bytes, "
                     f"a PIL image or a numpy array)")


def plain_mode(img: Image.Image) -> Image.Image:
    """Any PIL mode -> L, RGB or RGBA (16-bit and float data rescaled, transparency kept)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return array_to_image(np.asarray(img))
    if mode == "1":
        return img.convert("L")
    if mode in ("LA", "La", "RGBa", "PA"):
        return img.convert("RGBA")  # keep alpha; grey is replicated, the channel choice copes
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode not in ("L", "RGB", "RGBA"):
        return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV...
    return img


def one_channel(a: np.ndarray) -> np.ndarray:
    """An 8-bit RGB(A) image with no colour in it - grey stored as RGB, a canvas's dark strokes
    on white, opaque throughout - as its one channel, so that it is read as the same picture
    stored as grey is, and without the colour analysis (about a tenth of a small image's
    time). Anything else is returned as it is."""
    if a.ndim != 3 or a.dtype != np.uint8:
        return a
    if a.shape[2] == 4:
        if a[:, :, 3].min() < 255:  # (translucent: the backdrop is chosen later)
            return a
    elif a.shape[2] != 3:
        return a
    r, g, b = a[:, :, 0], a[:, :, 1], a[:, :, 2]
    # (the first row first: a colour image nearly always shows it there, for a few us)
    if not (np.array_equal(r[0], g[0]) and np.array_equal(g[0], b[0])):
        return a
    if not (np.array_equal(r, g) and np.array_equal(g, b)):
        return a
    return np.ascontiguousarray(r)


def _steps(a: np.ndarray, step: int, axis: int) -> np.ndarray:
    """How many neighbours, along ``axis`` (1: across, 0: down), differ by more than ``step``
    in some channel, per position between them."""
    d = cv2.absdiff(a[:, 1:], a[:, :-1]) if axis == 1 else cv2.absdiff(a[1:], a[:-1])
    m = d if d.ndim == 2 else d[:, :, 0]
    if d.ndim == 3:
        for c in range(1, d.shape[2]):  # (not a reduction over a short axis: far slower)
            m = np.maximum(m, d[:, :, c])
    _, big = cv2.threshold(m, step, 1, cv2.THRESH_BINARY)
    return cv2.reduce(big, 1 - axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()


def _phase(steps: np.ndarray, k: int, share: float) -> int | None:
    """The phase modulo ``k`` holding at least ``share`` of ``steps``, if one does."""
    per = np.bincount(np.arange(len(steps)) % k, steps, minlength=k)
    best = int(per.argmax())
    return best if per[best] >= share * steps.sum() else None


def unblocked(img: Image.Image | np.ndarray, p: Params) -> Image.Image | np.ndarray:
    """A picture enlarged blockwise (nearest neighbour: a thumbnail or a scanned cell blown up
    by a whole factor k) back at the size it was drawn at, each k x k block averaged; anything
    else as it is. Blocky strokes are not what MNIST's smooth ones look like, and the smaller
    picture is then read as the tiny crop it is (enlarged smoothly, ``to_working``).

    A step between neighbours is any channel changing by more than ``block_step``; the
    picture is blockwise when, across and down, at least ``block_share`` of its steps fall at
    one phase modulo k (a smooth picture spreads them over every phase), for the largest such
    k up to ``block_max_px``; partial blocks at the edges are completed by replication."""
    a = img if isinstance(img, np.ndarray) else np.asarray(plain_mode(img))
    h, w = a.shape[:2]
    kmax = min(p.block_max_px, min(h, w) // 4)
    if kmax < 2 or a.dtype != np.uint8:
        return img
    step = int(p.block_step * 255)
    sx, sy = _steps(a, step, 1), _steps(a, step, 0)
    if min(sx.sum(), sy.sum()) < 4:
        return img

    def phases(k: int) -> tuple[int, int] | None:
        px = _phase(sx, k, p.block_share)
        py = None if px is None else _phase(sy, k, p.block_share)
        return None if py is None else (px, py)

    # (k's steps at one phase are at one phase modulo each prime factor of k too: the primes
    # first, so that a picture that is not blockwise costs four checks)
    found = {q: phases(q) for q in (2, 3, 5, 7) if q <= kmax}
    for k in range(kmax, 1, -1):
        if not any(found.get(q) for q in (2, 3, 5, 7) if k % q == 0):
            continue
        both = found[k] if k in found else phases(k)
        if both is not None:
            px, py = both
            # a step after pixel i (i % k == phase): blocks start at phase + 1
            left, top = (k - 1 - px) % k, (k - 1 - py) % k
            b = cv2.copyMakeBorder(a, top, (-(h + top)) % k, left, (-(w + left)) % k,
                                   cv2.BORDER_REPLICATE)
            out = cv2.resize(b, (b.shape[1] // k, b.shape[0] // k), interpolation=cv2.INTER_AREA)
            return np.ascontiguousarray(out.reshape(out.shape[:2] + a.shape[2:]))
    return img


def to_working(img: Image.Image | np.ndarray, p: Params) -> tuple[np.ndarray, float]:
    """PIL image (or a plain PNG's pixels, from ``load_pixels``) -> float32 (H, W, C) in [0, 1]
    at working size, C in {1, 3, 4} (1 for an image with no colour in it, see ``one_channel``),
    and the scale (working px per decoded px): photos shrink (area interpolation), tiny crops
    are enlarged by a whole factor (bilinear: an 8 px digit becomes a smooth 64 px one)."""
    if isinstance(img, np.ndarray):
        a = img
    else:
        img = plain_mode(img)
        a = np.asarray(img)
    h, w = a.shape[:2]
    scale = min(1.0, (p.work_area / (w * h)) ** 0.5, p.work_side / max(w, h))
    if scale < 1.0:
        k = int(1.0 / scale)
        if k >= 2:
            # Pillow's reduce() box-averages by a whole factor in one pass over the pixels
            a = np.asarray((Image.fromarray(a) if isinstance(img, np.ndarray) else img).reduce(k))
        else:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
    elif max(w, h) < p.tiny_px:
        k = max(2, -(-p.tiny_target_px // max(w, h)))
        a = cv2.resize(a, (w * k, h * k), interpolation=cv2.INTER_LINEAR)
    scale = a.shape[1] / w
    a = one_channel(a)
    a = np.multiply(a, np.float32(1.0 / 255.0), dtype=np.float32)  # (no float copy first)
    if a.ndim == 2:
        a = a[:, :, None]
    return a, scale
