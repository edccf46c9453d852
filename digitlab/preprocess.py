"""Any user image -> an MNIST-style 28x28 digit: the one place in digitlab that does this.

MNIST digits are bright ink on a black background, fitted into a 20x20 box keeping their aspect
ratio (with anti-aliasing) and placed in a 28x28 field so that their centre of mass is at the
centre (LeCun's MNIST page). People's images are dark ink on paper of any colour, any size, lit
unevenly, photographed, drawn on transparent canvases. ``preprocess`` bridges the two:

1. decode (every format Pillow reads, first frame, EXIF orientation), flatten transparency onto
   a backdrop that contrasts with the strokes, shrink to a working size;
2. decide the polarity against a plane fitted to the border (the paper), then reduce colour to
   one channel in which a pen of any colour stands out from paper of any colour;
3. divide out (dark ink) or subtract (bright ink) a smooth background estimated from block
   extrema, normalise the stroke contrast to 1 and threshold at mid-contrast with hysteresis;
4. label 8-connected components; the digit is the main blob plus the pieces near it, specks
   and border-touching clutter are ignored, ruled lines are erased; blank, noisy or shapeless
   inputs (solid blobs, grids, scribbles running off the page) get a reason instead;
5. crop, thicken hair-thin strokes, fit into 20x20 keeping aspect ratio with anti-aliasing and
   move by whole pixels so that the centre of mass lands on pixel (14, 14), as MNIST did.

Predict, the web service, image-folder datasets and the tests all call ``preprocess``;
``segment_digits`` does the same for a row of digits (number mode). An image that already is
MNIST-like (28x28, bright on dark) passes through unchanged, so accuracy on such data is the
model's own.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

SIZE = 28  # MNIST field
BOX = 20  # MNIST digits are fitted into a BOX x BOX square inside the field
WORK_AREA = 320 * 320  # analysis resolution: pixels kept after shrinking (time ~ area)
WORK_SIDE = 768  # ...and the longest side, so wide strips of digits keep their height
BLANK_CONTRAST = 0.08  # ink must differ from paper by this much (fraction of full scale)
LOW, HIGH = 0.3, 0.5  # hysteresis thresholds, as fractions of the normalised stroke contrast
PIECE_REACH = 0.25  # pieces of a digit lie within this fraction of its size of each other...
BIG_PIECE_REACH = 0.6  # ...or this one for a piece of BIG_PIECE x the main stroke's area
BIG_PIECE = 0.5
DASH_GAP = 0.04  # ...and small pieces chained to it by gaps under this fraction of its size
MIN_STROKE = 1.7  # px at 28x28 scale; thinner strokes are dilated (MNIST: median 3.2 px)


@dataclass
class Preprocessed:
    """One digit as the model sees it, plus what it took to get there."""

    image: np.ndarray  # (28, 28) uint8, bright ink on dark; all zeros if nothing was found
    reason: str | None = None  # why no digit could be found, else None
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # name -> uint8 image
    bbox: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in the decoded image's pixels
    polarity: str = ""  # "dark-on-light" or "light-on-dark" (as found in the input)
    ink_fraction: float = 0.0  # share of the analysed image covered by ink
    components: int = 0  # ink pieces (specks excluded) that make up the digit
    size: tuple[int, int] = (0, 0)  # width, height of the decoded input

    @property
    def ok(self) -> bool:
        return self.reason is None


# ---------------------------------------------------------------------------------------------
# Decoding


def _open_stream(fp: Any, name: str, draft: int | None) -> Image.Image:
    try:
        img = Image.open(fp)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (format not recognised)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large ({exc})") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc})") from None
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP/TIFF: the first frame
        if draft and img.format == "JPEG":
            # JPEG decodes at 1/2..1/8 scale for free; still at least `draft` px on each side.
            img.draft(img.mode if img.mode in ("L", "RGB") else "RGB", (draft, draft))
        img.load()
        if "exif" in img.info or img.format in ("TIFF", "MPO"):  # parsing EXIF costs ~30 us
            img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageError(f"{name}: truncated or corrupt image data ({exc})") from None
    return img


def _array_to_image(arr: np.ndarray, name: str = "array") -> Image.Image:
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
        return _array_to_image(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("<bytes>: empty image data (0 bytes)")
        return _open_stream(io.BytesIO(data), "<bytes>", draft)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except OSError as exc:
            raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, not an image")
        if st.st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        try:
            with open(path, "rb") as f:
                return _open_stream(f, str(path), draft)
        except PermissionError:
            raise ImageError(f"{path}: permission denied") from None
    raise ImageError(f"unsupported input type {type(source).__name__} (expected a path, bytes, "
                     f"a PIL image or a numpy array)")


def _to_working(img: Image.Image) -> tuple[np.ndarray, float]:
    """PIL image of any mode -> float32 (H, W, C) in [0, 1] at working size, C in {1, 3, 4};
    also returns the scale (working px per decoded px)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _array_to_image(np.asarray(img))
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("LA", "La"):
        img = img.convert("RGBA")  # keep alpha; grey is replicated, the channel choice copes
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("RGBa",):
        img = img.convert("RGBA")
    elif mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, PA...
    w, h = img.size
    scale = min(1.0, (WORK_AREA / (w * h)) ** 0.5, WORK_SIDE / max(w, h))
    if scale < 1.0:
        # Box-averaging by an integer factor anti-aliases and is ~6x faster than a bilinear
        # resize of a photo; the working size then lands within (k+1)/k of the target.
        k = int(1.0 / scale)
        img = img.reduce(k) if k >= 2 else img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    scale = img.size[0] / w
    a = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    if a.ndim == 2:
        a = a[:, :, None]
    return a, scale


# ---------------------------------------------------------------------------------------------
# Ink map: background removal, polarity, contrast normalisation


def _flatten_alpha(a: np.ndarray) -> np.ndarray:
    """RGBA -> RGB on a backdrop that contrasts with the opaque pixels (a canvas exports black
    strokes on transparent black; white strokes on transparent must stay visible too)."""
    rgb, alpha = a[:, :, :3], a[:, :, 3:4]
    if alpha.min() > 0.98:
        return rgb
    opaque = alpha[:, :, 0] > 0.5
    lum = rgb[opaque].mean() if opaque.any() else 0.0
    backdrop = 1.0 if lum < 0.5 else 0.0
    return rgb * alpha + backdrop * (1.0 - alpha)


def _sample(x: np.ndarray) -> np.ndarray:
    """A strided subsample for statistics (percentiles on every pixel cost more than the rest)."""
    step = max(1, int((x.size / 6000) ** 0.5))
    return x[::step, ::step].ravel()


def _quantiles(x: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Quantiles (0..1) as order statistics of a sorted copy (the arrays are samples of at most
    ~12k values). Not np.partition: its introselect slows down ~10x on arrays dominated by one
    value - blank paper, whose deviations are mostly exactly 0 - and costs 1-2 ms there."""
    n = x.size
    idx = [min(n - 1, max(0, int(q * (n - 1) + 0.5))) for q in qs]
    part = np.sort(x, axis=None)
    return [float(part[i]) for i in idx]


def _median(x: np.ndarray) -> float:
    """np.median's value, from a sort (see _quantiles)."""
    v = np.sort(x, axis=None)
    m = v.size // 2
    return float(v[m]) if v.size % 2 else float((v[m - 1] + v[m]) / 2)


def _gray(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """One channel in which every ink colour stands out, and whether the ink is dark.

    The polarity comes from luminance. Dark ink: each channel is divided by the paper's colour
    (the border's median) and the darkest is kept, so a yellow or red pen on white or tinted
    paper is as dark as a black one. Bright ink on a dark ground: the brightest channel.
    """
    if rgb.shape[2] == 1:
        g = rgb[:, :, 0]
        return g, _dark_ink(g)
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    dark = _dark_ink(lum)
    if dark:
        paper = np.array([_quantiles(_border(rgb[:, :, i]), (0.5,))[0] for i in range(3)],
                         dtype=np.float32)
        # (channel by channel: a reduction over a length-3 axis is ~20x slower in numpy)
        inv = 1.0 / np.maximum(paper, 0.05)
        g = rgb[:, :, 0] * inv[0]
        np.minimum(g, rgb[:, :, 1] * inv[1], out=g)
        np.minimum(g, rgb[:, :, 2] * inv[2], out=g)
        np.minimum(g, 1.0, out=g)
    else:
        g = np.maximum(np.maximum(rgb[:, :, 0], rgb[:, :, 1]), rgb[:, :, 2])
    return g, dark


def _border(g: np.ndarray) -> np.ndarray:
    k = max(1, min(g.shape) // 40)
    return np.concatenate([g[:k].ravel(), g[-k:].ravel(), g[:, :k].ravel(), g[:, -k:].ravel()])


def _block_extreme(g: np.ndarray, block: int, take_max: bool) -> np.ndarray:
    """Block-wise max (or min), then a 3x3 min (max) over blocks: the paper level under each
    block even where a thick stroke fills one block, but not the ink."""
    h, w = g.shape
    ph, pw = -h % block, -w % block
    p = np.pad(g, ((0, ph), (0, pw)), mode="edge")
    b = p.reshape(p.shape[0] // block, block, p.shape[1] // block, block)
    b = b.max(axis=(1, 3)) if take_max else b.min(axis=(1, 3))
    q = np.pad(b, 1, mode="edge")
    shifted = [q[i:i + b.shape[0], j:j + b.shape[1]] for i in range(3) for j in range(3)]
    # Ink lowers a block's max only where a stroke covers the whole block; the neighbours
    # then supply the paper level (median rather than max: a stray bright speck is ignored).
    b = np.sort(np.stack(shifted), axis=0)[4]  # the median of 9 (np.median: partition, slower)
    field_img = Image.fromarray(b.astype(np.float32), mode="F")
    return np.asarray(field_img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _dark_ink(g: np.ndarray) -> bool:
    """Polarity: is the ink darker than the paper?

    The paper is what the border shows: a plane fitted to the medians of 16 border segments
    follows uneven lighting, and a bold digit rarely covers much of the border. The ink is the
    side of the residual histogram with more contrast mass beyond the paper's own spread
    (mass, not quantiles: a small digit is < 1% of a photo).
    """
    h, w = g.shape
    if min(h, w) < 40:  # a crop: one paper level
        border = _border(g)
        bg, lo, hi = _quantiles(border, (0.5, 0.25, 0.75))
        margin = max(0.04, 4.0 * (hi - lo))
        dark_mass = float(np.maximum(bg - margin - g, 0.0).sum())
        return dark_mass > float(np.maximum(g - bg - margin, 0.0).sum())
    k = max(1, min(h, w) // 40)
    pts, vals = [], []
    for i in range(4):
        xa, xb = i * w // 4, max((i + 1) * w // 4, i * w // 4 + 1)
        ya, yb = i * h // 4, max((i + 1) * h // 4, i * h // 4 + 1)
        for (x, y), strip in (((xa + xb) / 2, k / 2), g[:k, xa:xb]), \
                (((xa + xb) / 2, h - k / 2), g[-k:, xa:xb]), \
                ((k / 2, (ya + yb) / 2), g[ya:yb, :k]), \
                ((w - k / 2, (ya + yb) / 2), g[ya:yb, -k:]):
            pts.append((1.0, x / w, y / h))
            vals.append(_median(strip))
    A, v = np.asarray(pts), np.asarray(vals)
    coef = np.linalg.lstsq(A, v, rcond=None)[0]
    spread = float(np.median(np.abs(v - A @ coef)))
    margin = max(0.04, 4.0 * spread)
    sub = g[::2, ::2]
    yy = (np.arange(sub.shape[0], dtype=np.float32) * (h / sub.shape[0]))[:, None] / h
    xx = (np.arange(sub.shape[1], dtype=np.float32) * (w / sub.shape[1]))[None, :] / w
    r = sub - (coef[0] + coef[1] * xx + coef[2] * yy).astype(np.float32)
    dark_mass = float(np.maximum(-r - margin, 0.0).sum())
    bright_mass = float(np.maximum(r - margin, 0.0).sum())
    return dark_mass > bright_mass


@dataclass
class _Ink:
    ink: np.ndarray  # float32 (H, W) in [0, 1], 1 = full stroke contrast
    gray: np.ndarray  # the chosen channel, as decoded
    dark_ink: bool
    contrast: float  # stroke contrast before normalisation (fraction of full scale)
    noise: float  # robust sd of the paper, as a fraction of the stroke contrast
    reason: str | None


def _ink_map(a: np.ndarray) -> _Ink:
    if a.shape[2] == 4:
        a = _flatten_alpha(a)
    g, dark_ink = _gray(a)
    h, w = g.shape
    if min(h, w) >= 40:  # smaller images are crops: one paper level is enough
        # Blocks larger than any stroke, so that only blocks entirely inside ink lose their
        # paper level (the neighbours' median restores it): a bold stroke or a filled shape
        # would otherwise come out hollow.
        block = max(4, max(h, w) // 5)
        if dark_ink:
            paper = _block_extreme(g, block, take_max=True)
            ink = 1.0 - g / np.maximum(paper, 0.04)  # reflectance: shadows scale ink and paper
        else:
            ink = g - _block_extreme(g, block, take_max=False)
    else:
        bg = _quantiles(_border(g), (0.5,))[0]
        ink = (bg - g) if dark_ink else (g - bg)
    ink = np.clip(ink, 0.0, 1.0, out=ink)
    # Statistics from a 256-bin histogram: one pass, no sorting of the whole image.
    hist = np.bincount((ink * 255.0).astype(np.uint8).ravel(), minlength=256)
    cum = np.cumsum(hist)
    n = int(cum[-1])
    robust_max = float(np.searchsorted(cum, n - min(5, n))) / 255.0  # 5th brightest pixel
    med = float(np.searchsorted(cum, n // 2)) / 255.0
    s = _sample(ink)
    sigma = 1.4826 * _quantiles(np.abs(s - med), (0.5,))[0] + 1.0 / 255.0
    if robust_max < max(BLANK_CONTRAST, med + 6 * sigma):
        # nothing stands out of the paper's grain: a blank page, or pure noise if it is grainy
        reason = ("noise: no stroke stands out of the background" if sigma > 0.05
                  else "blank: no ink found")
        return _Ink(np.zeros_like(ink), g, dark_ink, robust_max, 1.0, reason)
    first = int(0.45 * robust_max * 255.0) + 1
    strong_cum = np.cumsum(hist[first:])
    level = (first + float(np.searchsorted(strong_cum, strong_cum[-1] // 2))) / 255.0
    level = max(level, 1.0 / 255.0)
    ink *= 1.0 / level
    np.clip(ink, 0.0, 1.0, out=ink)
    return _Ink(ink, g, dark_ink, level, (med + sigma) / level, None)


# ---------------------------------------------------------------------------------------------
# Connected components on runs (no scipy): runs of ink per row, linked to overlapping runs in
# the next row, labels propagated with pointer jumping.


@dataclass
class _Components:
    run_row: np.ndarray
    run_c0: np.ndarray
    run_c1: np.ndarray  # exclusive
    run_comp: np.ndarray  # component id per run
    area: np.ndarray
    strong: np.ndarray  # pixels above the high threshold
    x0: np.ndarray
    x1: np.ndarray  # exclusive
    y0: np.ndarray
    y1: np.ndarray  # exclusive

    @property
    def n(self) -> int:
        return len(self.area)

    def mask(self, comps: np.ndarray | list[int], shape: tuple[int, int]) -> np.ndarray:
        comps = np.asarray(comps, dtype=np.int64)
        sel = (self.run_comp == comps[0]) if len(comps) == 1 else np.isin(self.run_comp, comps)
        acc = np.zeros((shape[0], shape[1] + 1), dtype=np.int16)
        np.add.at(acc, (self.run_row[sel], self.run_c0[sel]), 1)
        np.add.at(acc, (self.run_row[sel], self.run_c1[sel]), -1)
        return np.cumsum(acc, axis=1)[:, :-1] > 0


def _components(low: np.ndarray, high: np.ndarray) -> _Components:
    h, w = low.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = low
    d = np.diff(padded, axis=1)
    rr, c0 = np.nonzero(d == 1)
    _, c1 = np.nonzero(d == -1)
    n = len(rr)
    if n == 0:
        e = np.zeros(0, dtype=np.int64)
        return _Components(e, e, e, e, e, e, e, e, e, e)
    stride = w + 2
    start_key = rr * stride + c0
    end_key = rr * stride + c1
    # runs of the next row touching run i (8-connected): end >= c0 and start <= c1
    lo = np.searchsorted(end_key, (rr + 1) * stride + c0, side="left")
    hi = np.searchsorted(start_key, (rr + 1) * stride + c1, side="right")
    cnt = np.maximum(hi - lo, 0)
    src = np.repeat(np.arange(n), cnt)
    offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    dst = np.repeat(lo, cnt) + offs
    if len(src) <= 4000:
        # A digit has tens to hundreds of runs: union-find in Python beats array passes.
        parent = list(range(n))
        for a, b in zip(src.tolist(), dst.tolist()):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            while parent[b] != b:
                parent[b] = parent[parent[b]]
                b = parent[b]
            if a != b:
                parent[max(a, b)] = min(a, b)
        for i in range(n):  # parents point to lower indices, so one forward pass flattens
            parent[i] = parent[parent[i]]
        label = np.asarray(parent)
    else:
        # Noise-like masks: propagate minimum labels over the run graph with pointer jumping.
        label = np.arange(n)
        while True:
            m = np.minimum(label[src], label[dst])
            new = label.copy()
            np.minimum.at(new, src, m)
            np.minimum.at(new, dst, m)
            while True:
                nxt = new[new]
                if np.array_equal(nxt, new):
                    break
                new = nxt
            if np.array_equal(new, label):
                break
            label = new
    _, comp = np.unique(label, return_inverse=True)
    ncomp = int(comp.max()) + 1
    length = c1 - c0
    area = np.bincount(comp, weights=length, minlength=ncomp).astype(np.int64)
    # strong pixels per run from a cumulative sum along each row
    hc = np.zeros((h, w + 1), dtype=np.int32)
    hc[:, 1:] = np.cumsum(high, axis=1)
    strong_run = hc[rr, c1] - hc[rr, c0]
    strong = np.bincount(comp, weights=strong_run, minlength=ncomp).astype(np.int64)
    x0 = np.full(ncomp, w, dtype=np.int64)
    np.minimum.at(x0, comp, c0)
    x1 = np.zeros(ncomp, dtype=np.int64)
    np.maximum.at(x1, comp, c1)
    y0 = np.full(ncomp, h, dtype=np.int64)
    np.minimum.at(y0, comp, rr)
    y1 = np.zeros(ncomp, dtype=np.int64)
    np.maximum.at(y1, comp, rr + 1)
    return _Components(rr, c0, c1, comp, area, strong, x0, x1, y0, y1)


# ---------------------------------------------------------------------------------------------
# Analysis shared by single-digit and number mode


@dataclass
class _Analysis:
    work: np.ndarray  # working-size image (H, W, C) float
    scale: float  # working px per decoded px
    size: tuple[int, int]  # decoded width, height
    ink: _Ink
    low: np.ndarray  # bool mask (hysteresis region)
    comps: _Components
    keep: np.ndarray  # component ids that are not specks (strong pixels, big enough)
    ink_fraction: float
    reason: str | None


def _analyse(source: ImageSource) -> _Analysis:
    img = load_image(source, draft=2 * int(WORK_AREA ** 0.5))
    size = img.size
    work, scale = _to_working(img)
    ink = _ink_map(work)
    h, w = ink.ink.shape
    empty = np.zeros(0, dtype=np.int64)
    if ink.reason:
        comps = _components(np.zeros((h, w), bool), np.zeros((h, w), bool))
        return _Analysis(work, scale, size, ink, np.zeros((h, w), bool), comps, empty, 0.0,
                         ink.reason)
    high = ink.ink > HIGH
    low = ink.ink > max(LOW, min(3.0 * ink.noise, HIGH - 0.05))
    comps = _components(low, high)
    has_strong = comps.strong > 0
    ink_fraction = int(comps.area[has_strong].sum()) / float(h * w)
    if not has_strong.any():
        return _Analysis(work, scale, size, ink, low, comps, empty, 0.0, "blank: no ink found")
    keep, reason = _keep(comps, h, w)
    if ink.noise > 0.25:
        reason = "noise: the image has no clear background"
    elif ink_fraction > 0.45:
        reason = "noise: ink covers most of the image (texture or a photo, not a digit)"
    return _Analysis(work, scale, size, ink, low, comps, keep, ink_fraction, reason)


def _keep(comps: _Components, h: int, w: int, only_specks: str = "blank: only specks"
          ) -> tuple[np.ndarray, str | None]:
    """The components that are not specks (some component has strong pixels), and why there is
    no digit among them (or None); ``only_specks`` is the reason when nothing else is left."""
    has_strong = comps.strong > 0
    low_area = int(comps.area[has_strong].sum())
    biggest = int(comps.area[has_strong].max())
    # A speck is small both in absolute terms (a few working px) and next to the main stroke.
    speck = max(3, int(0.02 * biggest), int(2e-4 * h * w))
    keep = np.nonzero(has_strong & (comps.area >= speck))[0]
    if len(keep) > 25 and biggest < 0.5 * low_area:
        return keep, f"noise: {int(has_strong.sum())} scattered specks and no main stroke"
    if len(keep) == 0:
        return keep, only_specks
    return keep, None


def _touches_border(c: _Components, i: int, h: int, w: int) -> bool:
    return c.x0[i] == 0 or c.y0[i] == 0 or c.x1[i] == w or c.y1[i] == h


def _select_digit(an: _Analysis) -> list[int]:
    """The main blob and the pieces that belong to it (near it, not specks)."""
    c, (h, w) = an.comps, an.low.shape
    keep = an.keep
    # Clutter along the edges (a table beyond the paper, a shadow) counts for less.
    score = np.array([c.area[i] * (0.3 if _touches_border(c, i, h, w) else 1.0) for i in keep])
    main = int(keep[int(np.argmax(score))])
    group = [main]
    bx0, by0, bx1, by1 = c.x0[main], c.y0[main], c.x1[main], c.y1[main]
    piece_min = 0.04 * c.area[main]
    changed = True
    while changed:
        changed = False
        size = max(bx1 - bx0, by1 - by0)
        for i in keep:
            if i in group or c.area[i] < piece_min:
                continue
            # A big piece may sit further away than a small one: a fine pen breaks strokes
            # where the writer's pressure dropped (the crossbar of a 4, the hat of a 5).
            big = min(1.0, c.area[i] / (BIG_PIECE * c.area[main]))
            reach = size * (PIECE_REACH + (BIG_PIECE_REACH - PIECE_REACH) * big)
            if (c.x0[i] < bx1 + reach and c.x1[i] > bx0 - reach
                    and c.y0[i] < by1 + reach and c.y1[i] > by0 - reach):
                group.append(int(i))
                bx0, by0 = min(bx0, c.x0[i]), min(by0, c.y0[i])
                bx1, by1 = max(bx1, c.x1[i]), max(by1, c.y1[i])
                changed = True
    small = [int(i) for i in keep if i not in group and c.area[i] < piece_min]
    gap = DASH_GAP * max(bx1 - bx0, by1 - by0)
    if small and gap >= 3:  # (bridging 1-2 px in a small image would join noise texture)
        group += _dashes(c, (h, w), group, small, gap)
    return group


def _dashes(c: _Components, shape: tuple[int, int], group: list[int], small: list[int],
            gap: float) -> list[int]:
    """The small pieces chained to the digit by gaps of at most ``gap`` px: the dashes of a fine
    pen whose ink skipped along the stroke (the stem of a 9 in five short pieces)."""
    r = max(1, int(np.ceil(gap / 2)))  # grow every piece by gap/2: gaps up to gap close
    ids = group + small
    x0, y0 = int(min(c.x0[ids])), int(min(c.y0[ids]))
    x1, y1 = int(max(c.x1[ids])), int(max(c.y1[ids]))
    b = _bridged(c.mask(ids, shape)[y0:y1, x0:x1], r)
    # the bridged piece holding a component's first run (row, start), in padded crop coords
    stride = x1 - x0 + 2 * r + 1
    key = b.run_row * stride + b.run_c0

    def label(i: int) -> int:
        j = int(np.argmax(c.run_comp == i))
        row, col = c.run_row[j] - y0 + r, c.run_c0[j] - x0 + r
        k = int(np.searchsorted(key, row * stride + col, side="right")) - 1
        return int(b.run_comp[k])

    mine = {label(i) for i in group}
    return [i for i in small if label(i) in mine]


def _shape_reason(an: _Analysis, group: list[int], number_mode: bool = False) -> str | None:
    c, (h, w) = an.comps, an.low.shape
    x0, x1 = min(c.x0[group]), max(c.x1[group])
    y0, y1 = min(c.y0[group]), max(c.y1[group])
    bw, bh = int(x1 - x0), int(y1 - y0)
    area = int(c.area[group].sum())
    if max(bw, bh) < max(4, 0.03 * max(h, w)) or area < 8:
        return "only a speck of ink"
    if not number_mode and bw > 1.2 * bh and len(group) > 1:
        cols = _group_columns(an, group)
        if sum(int(max(c.y1[g]) - min(c.y0[g])) >= 0.5 * bh for g in cols) >= 2:
            return "several digits side by side (use number mode: --number)"
    if bw > 4 * bh:
        return "a horizontal line, not a digit"
    sel = c.mask(group, (h, w))[y0:y1, x0:x1]
    if len(group) > 6 and _bridged_pieces(sel, len(group)) > 6:
        return "scattered fragments"
    if (not number_mode and min(h, w) >= 40 and any(_touches_border(c, i, h, w) for i in group)
            and bw < 0.7 * w and bh < 0.7 * h):  # (MNIST crops may touch their edge)
        # not a tight crop, yet the ink runs into the edge: a cut-off mark or a scribble
        return "the ink runs off the edge of the image"
    # Thresholds from MNIST digits re-rendered in every benchmark style (1st/99th percentiles)
    # against generated shapes, grids and scribbles: see docs/predict.md.
    fill = area / float(bw * bh)
    stroke = _stroke_width(sel) / max(bw, bh)
    any_holes = len(group) - _euler(sel)  # 4-connected holes of any size
    # Bold 6s and 8s are as thick as blobs but keep (small) loops; a filled shape has none.
    if any_holes <= 0 and (fill > 0.6 and stroke > 0.35 or fill > 0.9 and stroke > 0.28):
        return "a solid blob, not a pen stroke"
    if any_holes >= 5 and stroke < 0.11:  # digits: <= 2 loops at this stroke width
        # count again after closing pinholes (dithered scans, noisy strokes are full of them)
        closed = ~_grow(~_grow(sel))
        loops = _components(closed, closed).n - _euler(closed)
        if loops >= 5:
            return f"a scribble ({loops} crossings and loops)"
    loops = _holes(sel, len(group), max(2, int(0.002 * bw * bh)))
    if loops >= 5:  # an 8 has two loops (a hasty one 3 or 4); grids and hatching have many
        return f"{loops} enclosed loops (a grid or scribble)"
    return None


def _bridged_pieces(sel: np.ndarray, n: int) -> int:
    """The ``n`` pieces of ink once gaps up to ~6% of the mark's size are bridged: a fine pen's
    dashed stroke (pressure dropping again and again along a 3 or an 8) is one piece, specks
    strewn over the page stay many. Small marks are not bridged (1-2 px joins noise texture)."""
    r = round(0.03 * max(sel.shape))
    return _bridged(sel, r).n if r >= 2 else n


def _bridged(sel: np.ndarray, r: int) -> _Components:
    """Components of ``sel`` padded by ``r`` and grown by ``r`` px: gaps up to 2r closed."""
    near = _dilate(np.pad(sel, r), r) > 0
    return _components(near, near)


def _euler(sel: np.ndarray) -> int:
    """Euler number (components - holes, 8-connected ink) from 2x2 bit-quad counts (Gray)."""
    p = _pad1(sel).astype(np.int8)
    q = p[:-1, :-1] + p[:-1, 1:] + p[1:, :-1] + p[1:, 1:]
    diag = ((q == 2) & (p[:-1, :-1] == p[1:, 1:])).sum()
    return int(((q == 1).sum() - (q == 3).sum() - 2 * diag) // 4)


def _neighbour_reason(an: _Analysis, group: list[int]) -> str | None:
    """Another digit-sized blob beside the digit, on the same line: a number, not a digit."""
    c = an.comps
    y0, y1 = min(c.y0[group]), max(c.y1[group])
    x0, x1 = min(c.x0[group]), max(c.x1[group])
    gh = y1 - y0
    for i in an.keep:
        if i in group or c.y1[i] - c.y0[i] < 0.6 * gh:
            continue
        overlap = min(y1, c.y1[i]) - max(y0, c.y0[i])
        gap = max(c.x0[i] - x1, x0 - c.x1[i])
        if overlap > 0.5 * gh and gap < 2 * gh:
            return "several digits side by side (use number mode: --number)"
    return None


def _holes(sel: np.ndarray, n_ink: int, min_area: int) -> int:
    """Background regions enclosed by the ink (``n_ink`` 8-connected pieces), not touching the
    crop's edge, ignoring those smaller than ``min_area`` px."""
    # The Euler number counts 4-connected holes of any size, an upper bound on what is
    # measured below: when it is small, labelling the background is not needed.
    upper = n_ink - _euler(sel)
    if upper < 4:
        return upper
    inv = ~sel
    c = _components(inv, inv)
    h, w = sel.shape
    inner = (c.x0 > 0) & (c.y0 > 0) & (c.x1 < w) & (c.y1 < h) & (c.area >= min_area)
    return int(inner.sum())


# ---------------------------------------------------------------------------------------------
# Fitting into the MNIST field


def _pad1(m: np.ndarray) -> np.ndarray:
    p = np.zeros((m.shape[0] + 2, m.shape[1] + 2), m.dtype)  # np.pad is slow on tiny arrays
    p[1:-1, 1:-1] = m
    return p


def _grow(m: np.ndarray) -> np.ndarray:
    """3x3 binary dilation with shifted maxima (no filter kernels needed)."""
    p = _pad1(m)
    v = p[:-2] | p[1:-1] | p[2:]
    return v[:, :-2] | v[:, 1:-1] | v[:, 2:]


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return m
    img = Image.fromarray(m.astype(np.float32), mode="F")
    return np.asarray(img.filter(ImageFilter.MaxFilter(2 * r + 1)), dtype=np.float32)


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in px: area / half the boundary length (a strip w x L has ~2L edge)."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    p = _pad1(mask)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    edge = area - int(inner.sum())
    return area / max(edge / 2.0, 1.0)


def _fit(patch: np.ndarray, stroke: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Soft ink patch (cropped to the digit) -> 28x28 float, fitted into 20x20 and centred by
    centre of mass; hair-thin strokes (relative to the digit's size) are thickened first."""
    stages: dict[str, np.ndarray] = {}
    ph, pw = patch.shape
    s = BOX / max(ph, pw)
    if stroke * s < MIN_STROKE and max(ph, pw) > BOX:
        r = int(np.ceil((MIN_STROKE / s - stroke) / 2.0))
        patch = _dilate(np.pad(patch, r), r)
        ph, pw = patch.shape
        s = BOX / max(ph, pw)
        stages["thickened"] = patch
    nw, nh = max(1, round(pw * s)), max(1, round(ph * s))
    small = Image.fromarray(patch.astype(np.float32), mode="F").resize(
        (nw, nh), Image.Resampling.BOX if s < 1 else Image.Resampling.BILINEAR)
    box = np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)
    stages["fitted"] = box
    total = float(box.sum())
    if total <= 0:
        return np.zeros((SIZE, SIZE), np.float32), stages
    ys, xs = np.arange(nh, dtype=np.float32), np.arange(nw, dtype=np.float32)
    cy = float(box.sum(axis=1) @ ys) / total
    cx = float(box.sum(axis=0) @ xs) / total
    # MNIST moved each digit by whole pixels to put its centre of mass on pixel (14, 14)
    # (measured on the training set: mean 14.00, 14.01 in row/column index coordinates)
    top, left = int(round(14.0 - cy)), int(round(14.0 - cx))
    out = np.zeros((SIZE, SIZE), np.float32)
    ty0, tx0 = max(0, top), max(0, left)
    ty1, tx1 = min(SIZE, top + nh), min(SIZE, left + nw)
    if ty1 > ty0 and tx1 > tx0:
        out[ty0:ty1, tx0:tx1] = box[ty0 - top:ty1 - top, tx0 - left:tx1 - left]
    return out, stages


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _digit_from(an: _Analysis, group: list[int], keep_stages: bool, reason: str | None
                ) -> Preprocessed:
    c, (h, w) = an.comps, an.low.shape
    x0, x1 = int(min(c.x0[group])), int(max(c.x1[group]))
    y0, y1 = int(min(c.y0[group])), int(max(c.y1[group]))
    sel = c.mask(group, (h, w))[y0:y1, x0:x1]
    # soft anti-aliased edges just outside the thresholded region belong to the stroke
    near = _grow(sel)
    patch = an.ink.ink[y0:y1, x0:x1] * near
    out, fit_stages = _fit(patch, _stroke_width(sel))
    inv = 1.0 / an.scale
    bbox = (int(x0 * inv), int(y0 * inv), int(np.ceil(x1 * inv)), int(np.ceil(y1 * inv)))
    stages: dict[str, np.ndarray] = {}
    if keep_stages:
        stages = _common_stages(an)
        stages["mask"] = _to_u8(c.mask(group, (h, w)).astype(np.float32) * 0.75 + an.low * 0.25)
        stages["crop"] = _to_u8(patch)
        stages.update({k: _to_u8(v) for k, v in fit_stages.items()})
        stages["output"] = _to_u8(out)
    return Preprocessed(_to_u8(out), reason, stages, bbox, _polarity(an),
                        an.ink_fraction, len(group), an.size)


def _polarity(an: _Analysis) -> str:
    return "dark-on-light" if an.ink.dark_ink else "light-on-dark"


def _common_stages(an: _Analysis) -> dict[str, np.ndarray]:
    work = an.work[:, :, :3] if an.work.shape[2] >= 3 else an.work[:, :, 0]
    return {"input": _to_u8(work), "gray": _to_u8(an.ink.gray), "ink": _to_u8(an.ink.ink)}


def _empty(an: _Analysis, reason: str, keep_stages: bool) -> Preprocessed:
    stages = _common_stages(an) if keep_stages else {}
    if keep_stages:
        stages["mask"] = _to_u8(an.low.astype(np.float32))
    return Preprocessed(np.zeros((SIZE, SIZE), np.uint8), reason, stages, None, _polarity(an),
                        an.ink_fraction, 0, an.size)


def _mnist_like(an: _Analysis) -> np.ndarray | None:
    """A 28x28 single-channel input already bright on dark is MNIST format: keep its pixels."""
    if an.size != (SIZE, SIZE) or an.work.shape[2] != 1 or an.ink.dark_ink:
        return None
    return _to_u8(an.work[:, :, 0])


# ---------------------------------------------------------------------------------------------
# Public API


def preprocess(image: ImageSource, *, keep_stages: bool = False) -> Preprocessed:
    """Turn any image of one digit into the 28x28 bright-on-dark input MNIST models expect.

    ``image``: a path, encoded bytes, a PIL image or a numpy array (HxW or HxWxC; uint8, uint16,
    float in [0, 1] or bool). Raises ``ImageError`` if it cannot be decoded. When no digit is
    found, ``reason`` says why and ``image`` is all zeros - except for MNIST-format input
    (28x28, bright on dark), which always keeps its pixels, so that image-folder datasets of
    other classes (a Fashion-MNIST bag is a "solid blob") are not blanked. ``keep_stages``
    keeps the intermediate images (input, gray, ink, mask, crop, fitted, output).
    """
    an = _analyse(image)
    if not an.reason:
        an = _remove_rules(an)
    reason = an.reason
    if not reason:
        group = _select_digit(an)
        reason = _shape_reason(an, group) or _neighbour_reason(an, group)
    same = _mnist_like(an)
    if reason:
        out = _empty(an, reason, keep_stages)
        if same is not None:
            out.image = same
        return out
    if same is not None:
        c = an.comps
        bbox = (int(min(c.x0[group])), int(min(c.y0[group])),
                int(max(c.x1[group])), int(max(c.y1[group])))
        stages = {**_common_stages(an), "output": same} if keep_stages else {}
        return Preprocessed(same, None, stages, bbox, _polarity(an), an.ink_fraction,
                            len(group), an.size)
    return _digit_from(an, group, keep_stages, None)


def _remove_rules(an: _Analysis) -> _Analysis:
    """Erase ruled lines (long thin horizontal strokes under or through a number) and relabel,
    so digits written on a line separate from it."""
    c, (h, w) = an.comps, an.low.shape
    low = an.low.copy()
    found = False
    for i in an.keep:
        bw, bh = int(c.x1[i] - c.x0[i]), int(c.y1[i] - c.y0[i])
        # A ruled line spans most of the image and is much wider than tall; a digit's own bar
        # (the hat of a 5, the top of a 7) is about as wide as the digit.
        if bw < 0.6 * w or bw < 2.5 * bh:
            continue
        sub = c.mask([i], (h, w))[c.y0[i]:c.y1[i], c.x0[i]:c.x1[i]]
        rows = np.nonzero(sub.sum(axis=1) > 0.5 * bw)[0]
        if len(rows) == 0 or len(rows) > max(3, 0.15 * bw):
            continue
        r0, r1 = c.y0[i] + rows.min(), c.y0[i] + rows.max() + 1
        low[max(0, r0 - 1):min(h, r1 + 1), c.x0[i]:c.x1[i]] = False  # +1: its soft edges
        found = True
    if not found:
        return an
    high = an.ink.ink > HIGH
    comps = _components(low, high & low)
    if not (comps.strong > 0).any():
        return _Analysis(an.work, an.scale, an.size, an.ink, low, comps,
                         np.zeros(0, np.int64), 0.0, "only a line")
    keep, reason = _keep(comps, h, w, "only a line (and specks)")  # as before the lines went
    return _Analysis(an.work, an.scale, an.size, an.ink, low, comps, keep,
                     an.ink_fraction, reason)


def _group_columns(an: _Analysis, comps: Any = None) -> list[list[int]]:
    """Pieces that overlap horizontally are one digit (the hat of a 5, an open 4); digits side by
    side are separated by gaps. Returns groups left to right."""
    c = an.comps
    order = sorted((int(i) for i in (an.keep if comps is None else comps)),
                   key=lambda i: (c.x0[i], c.x1[i]))
    groups: list[list[int]] = []
    spans: list[list[int]] = []
    for i in order:
        x0, x1 = int(c.x0[i]), int(c.x1[i])
        if spans:
            g0, g1 = spans[-1]
            overlap = min(x1, g1) - max(x0, g0)
            if overlap > 0.4 * min(x1 - x0, g1 - g0):
                groups[-1].append(i)
                spans[-1] = [min(g0, x0), max(g1, x1)]
                continue
        groups.append([i])
        spans.append([x0, x1])
    # A fragment much shorter than its neighbour and nearly touching it is part of it (the
    # left stroke of an open 4 stopping short of the upright); digits of a number each span
    # most of the line's height and are separated by visible gaps.
    merged = True
    while merged and len(groups) > 1:
        merged = False
        tops = [int(min(c.y0[g])) for g in groups]
        bottoms = [int(max(c.y1[g])) for g in groups]
        heights = [b - t for t, b in zip(tops, bottoms)]
        for k in range(len(groups) - 1):
            gap = spans[k + 1][0] - spans[k][1]
            tall = max(heights[k], heights[k + 1])
            if gap < 0.1 * tall and min(heights[k], heights[k + 1]) < 0.7 * tall:
                groups[k] += groups.pop(k + 1)
                spans[k] = [spans[k][0], max(spans[k][1], spans.pop(k + 1)[1])]
                merged = True
                break
    return groups


def segment_digits(image: ImageSource, *, keep_stages: bool = False) -> list[Preprocessed]:
    """Split a row of digits (a whole number) into MNIST-style digits, left to right.

    Pieces overlapping horizontally stay one digit; ruled lines are removed; marks much
    smaller than the digits (dots, commas, specks) are dropped. Never empty: when no digit is
    found, the one element has ``reason`` set. Raises ``ImageError`` for unreadable input.
    """
    an = _analyse(image)
    if an.reason:
        return [_empty(an, an.reason, keep_stages)]
    an = _remove_rules(an)
    if an.reason:
        return [_empty(an, an.reason, keep_stages)]
    groups = _group_columns(an)
    c = an.comps
    heights = [int(max(c.y1[g]) - min(c.y0[g])) for g in groups]
    tallest = max(heights)
    groups = [g for g, gh in zip(groups, heights) if gh >= 0.35 * tallest]
    out = []
    for g in groups:
        reason = _shape_reason(an, g, number_mode=True)
        out.append(_digit_from(an, g, keep_stages, reason))
    if len(out) == 1 and (same := _mnist_like(an)) is not None and out[0].ok:
        out[0].image = same
    return out
