"""Decoding: any path, bytes, PIL image or array -> a float32 working image.

Every format Pillow reads (first frame, EXIF orientation applied), 1/8/16-bit, grey, RGB(A),
palette, CMYK. Big images shrink to a working size with area interpolation; crops (form cells,
thumbnails) are enlarged instead, so that 8-16 px digits have strokes to measure.
"""

from __future__ import annotations

import io
import logging
import os
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


def _open_stream(fp: Any, name: str, draft: int | None) -> Image.Image:
    """Open one of the formats digitlab reads (``imageformats.open_image``: an explicit format
    list, frame counts bounded) at its first frame; decode it, EXIF orientation applied."""
    img = open_image(fp, name)
    try:
        if draft and img.format == "JPEG":
            # JPEG decodes at 1/2..1/8 scale for free; still at least `draft` px on each side.
            img.draft(img.mode if img.mode in ("L", "RGB") else "RGB", (draft, draft))
        img.load()
        if "exif" in img.info or img.format in ("TIFF", "MPO"):  # parsing EXIF costs ~30 us
            img = ImageOps.exif_transpose(img)
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


def load_image(source: ImageSource, *, draft: int | None = None) -> Image.Image:
    """Decode a path, bytes, PIL image or array into a PIL image (first frame, EXIF applied).

    ``draft`` lets big JPEGs decode at reduced scale (never below ``draft`` px a side).
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


def to_working(img: Image.Image, p: Params) -> tuple[np.ndarray, float]:
    """PIL image -> float32 (H, W, C) in [0, 1] at working size, C in {1, 3, 4}, and the scale
    (working px per decoded px): photos shrink (area interpolation), tiny crops are enlarged
    by a whole factor (bilinear: an 8 px digit becomes a smooth 64 px one)."""
    img = plain_mode(img)
    w, h = img.size
    a = np.asarray(img)
    scale = min(1.0, (p.work_area / (w * h)) ** 0.5, p.work_side / max(w, h))
    if scale < 1.0:
        k = int(1.0 / scale)
        if k >= 2:
            # Pillow's reduce() box-averages by a whole factor in one pass over the pixels
            a = np.asarray(img.reduce(k))
        else:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
    elif max(w, h) < p.tiny_px:
        k = max(2, -(-p.tiny_target_px // max(w, h)))
        a = cv2.resize(a, (w * k, h * k), interpolation=cv2.INTER_LINEAR)
    scale = a.shape[1] / w
    a = a.astype(np.float32) * (1.0 / 255.0)
    if a.ndim == 2:
        a = a[:, :, None]
    return a, scale
