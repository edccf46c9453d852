"""Which image files digitlab opens, and the cheap checks done before any pixel is decoded.

Untrusted files (uploads to the web service, whatever a user points ``predict`` at) are opened
only as one of ``READ_FORMATS``, through Pillow's explicit format list: EPS (Ghostscript), PSD,
ICO, TGA and Pillow's other plugins are never tried. A multi-frame image (animated GIF, WebP or
PNG, multi-page TIFF) is read at its first frame, and one with more than ``MAX_FRAMES`` frames is
refused after a bounded look at its structure: Pillow's own ``n_frames`` walks every frame of a
GIF or TIFF (0.7 s for a 5 MB GIF of 300,000 frames), so GIF and TIFF frames are counted here,
and the count stops one past the limit.

``open_image(fp, name)`` is what a decoder calls instead of ``Image.open``;
``check_regular_file(path)`` comes before opening a path (a FIFO would block the reader, a device
never ends). Both raise ``ImageError`` with a one-line message; ``ImageLimitError`` (a subclass)
when a limit refused the image, which the web service answers with 413.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from .errors import ImageError, ImageLimitError

# File names that image folders (datasets, `digitlab predict DIR`) are read from.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

log = logging.getLogger(__name__)

READ_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # Pillow format names
FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF or WebP"  # the same, for people
MAX_FRAMES = 1000  # frames (pages) an image may have; only the first is read
# A GIF stores pixel data in sub-blocks of at most 255 bytes; encoders write full ones. A file
# split into far more, smaller ones (1-byte blocks make 2.5 million in 5 MB) only costs readers
# time: at most this many, plus one per GIF_BYTES_PER_BLOCK bytes of file, are walked.
GIF_BLOCKS = 4096
GIF_BYTES_PER_BLOCK = 128


def _named(name: str, text: str) -> str:
    return f"{name}: {text}" if name else text


def check_regular_file(path: str | os.PathLike) -> os.stat_result:
    """``stat`` a path that is about to be opened as an image; ``ImageError`` unless it is a
    non-empty regular file (after symlinks). Returns the stat result."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a character device" if stat.S_ISCHR(mode) else
                "a block device" if stat.S_ISBLK(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a special file")
        raise ImageError(f"{path}: not a regular file but {kind}")
    if st.st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return st


def open_image(fp: IO[bytes], name: str = "", *, max_pixels: int | None = None) -> Image.Image:
    """Open an image file object as one of ``READ_FORMATS``, at its first frame, header only
    (nothing is decoded yet: call ``load()``).

    Refuses, with ``ImageError``: anything else, including formats Pillow could read; a header
    Pillow cannot parse. With ``ImageLimitError``: more than ``max_pixels`` pixels (when given;
    Pillow's own decompression-bomb limit applies otherwise), more than ``MAX_FRAMES`` frames.
    ``name`` starts each message (a path; "" for none).
    """
    start = fp.tell()
    if fp.read(4) == b"GIF8":
        # Pillow walks every block before the first frame as it opens a GIF: count first.
        try:
            frames = _walk(fp, _gif_frames, MAX_FRAMES)
        except ImageLimitError as exc:
            raise ImageLimitError(_named(name, str(exc))) from None
        _refuse_many_frames(frames, "GIF", name)
    fp.seek(start)
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 million pixels; the caller's max_pixels, or Pillow's error at
            # twice that, decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=READ_FORMATS)
    except Image.DecompressionBombError:
        limit = max_pixels or 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageLimitError(_named(name, f"image is over the limit of {limit} pixels")) from None
    except UnidentifiedImageError:
        raise ImageError(_named(name, f"not a {FORMAT_NAMES} image")) from None
    except Exception as exc:  # Pillow raises many kinds on truncated or hostile headers
        log.debug("%s: Pillow cannot open the header: %r", name or "image", exc)
        raise ImageError(_named(name, "corrupt or truncated image header")) from None
    try:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageLimitError(_named(name, f"image is {width}x{height} = {width * height} "
                                               f"pixels; the limit is {max_pixels}"))
        frames = count_frames(img, fp, MAX_FRAMES) if img.format != "GIF" else 1
        _refuse_many_frames(frames, img.format, name)
        if img.tell() != 0:
            img.seek(0)
    except ImageError:
        img.close()
        raise
    except Exception as exc:
        img.close()
        log.debug("%s: frame structure unreadable: %r", name or "image", exc)
        raise ImageError(_named(name, f"corrupt {img.format} frame structure")) from None
    return img


def _refuse_many_frames(frames: int, fmt: str, name: str) -> None:
    if frames > MAX_FRAMES:
        raise ImageLimitError(_named(name, f"{fmt} image has more than {MAX_FRAMES} frames; the "
                                           f"limit is {MAX_FRAMES} (only the first is read)"))


def count_frames(img: Image.Image, fp: IO[bytes], limit: int) -> int:
    """Frames of an opened image, counted up to ``limit + 1`` (a bigger count stops there).

    GIF and TIFF are walked here, block by block, with the file position restored; the other
    formats state their frame count in the header, where Pillow has already read it."""
    if img.format == "GIF":
        return _walk(fp, _gif_frames, limit)
    if img.format == "TIFF":
        return _walk(fp, _tiff_frames, limit)
    return int(getattr(img, "n_frames", 1))


def _walk(fp: IO[bytes], counter, limit: int) -> int:
    position = fp.tell()
    try:
        fp.seek(0, os.SEEK_END)
        size = fp.tell()
        fp.seek(0)
        return counter(fp, size, limit)
    finally:
        fp.seek(position)


def _gif_frames(fp: IO[bytes], size: int, limit: int) -> int:
    head = fp.read(13)
    if len(head) < 13:
        return 1
    if head[10] & 0x80:  # global colour table
        fp.seek(3 << ((head[10] & 7) + 1), os.SEEK_CUR)
    budget = GIF_BLOCKS + size // GIF_BYTES_PER_BLOCK
    frames = 0

    def skip_sub_blocks() -> bool:
        nonlocal budget
        while True:
            n = fp.read(1)
            if not n:
                return False
            if n[0] == 0:
                return True
            budget -= 1
            if budget < 0:
                raise ImageLimitError(f"GIF data split into more blocks than {GIF_BLOCKS} "
                                      f"+ one per {GIF_BYTES_PER_BLOCK} bytes")
            fp.seek(n[0], os.SEEK_CUR)

    while frames <= limit:
        kind = fp.read(1)
        if kind == b"!":  # extension: label, then sub-blocks
            fp.read(1)
            if not skip_sub_blocks():
                break
        elif kind == b",":  # image descriptor, local colour table, LZW code size, data
            desc = fp.read(9)
            if len(desc) < 9:
                break
            if desc[8] & 0x80:
                fp.seek(3 << ((desc[8] & 7) + 1), os.SEEK_CUR)
            fp.read(1)
            frames += 1
            if not skip_sub_blocks():
                break
        else:  # trailer, end of file or garbage: Pillow stops here too
            break
    return max(frames, 1)


def _tiff_frames(fp: IO[bytes], size: int, limit: int) -> int:
    head = fp.read(16)
    order = "<" if head[:2] == b"II" else ">"
    try:
        magic = struct.unpack(order + "H", head[2:4])[0]
        if magic == 43:  # BigTIFF: 8-byte counts and offsets, 20-byte entries
            count, entry, offset_fmt = "Q", 20, "Q"
            offset = struct.unpack(order + "Q", head[8:16])[0]
        else:
            count, entry, offset_fmt = "H", 12, "I"
            offset = struct.unpack(order + "I", head[4:8])[0]
    except struct.error:
        return 1
    count_size, offset_size = struct.calcsize(count), struct.calcsize(offset_fmt)
    seen: set[int] = set()
    frames = 0
    while 0 < offset < size and offset not in seen and frames <= limit:
        seen.add(offset)
        fp.seek(offset)
        raw = fp.read(count_size)
        if len(raw) < count_size:
            break
        frames += 1
        fp.seek(offset + count_size + struct.unpack(order + count, raw)[0] * entry)
        raw = fp.read(offset_size)
        offset = struct.unpack(order + offset_fmt, raw)[0] if len(raw) == offset_size else 0
    return max(frames, 1)
