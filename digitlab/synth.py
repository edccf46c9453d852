"""Renderer A: digits placed into the situations people hand them in, and look-alike non-digits.

Used to *tune* preprocessing and to *train* the shipped model through preprocessing (MNIST
training digits only). Scoring uses an independent renderer, ``benchmarks/renderer_b.py``, on
MNIST test digits: different line widths, box shapes, grid pitches, fonts and blur.

Situations (``SITUATIONS``: name -> function(rng, 28x28 uint8 digit) -> encoded image bytes):
form boxes (a printed rectangle, sometimes a comb field's ticks), graph paper, ruled paper,
low-resolution crops (8-16 px cells, ink touching the borders, sometimes upscaled and blurred);
``LATER_SITUATIONS`` (the same, outside the training pool): an answer blank's short line.
``lookalike`` renders a non-digit (letters, signs, arrows, a check mark, a smiley) from the
training fonts (``glyphs.TRAINING_FONTS``) or as pen strokes; ``boxed_number`` writes several digits
into a row of boxes. The training pool also writes some 7s crossed (``crossed_seven``), as
much of Europe writes them and MNIST's writers rarely did.
"""

from __future__ import annotations

import io
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# (imported first of all: it sets OpenCV to one thread before any OpenCV call here, so that
# the forked pool workers below never inherit a thread pool's lock held by a thread that fork
# left behind - they would hang in their first OpenCV call)
from .preprocess import preprocess
from .glyphs import LOOKALIKE_CHARS, doodle, fonts, pen_redrawn, wobble

PAPERS = [(255, 255, 255), (248, 246, 238), (242, 238, 215), (230, 238, 248), (236, 236, 236)]
PENS = [(10, 10, 10), (25, 35, 130), (10, 70, 190), (170, 25, 25), (40, 40, 40)]
PRINT = [(0, 0, 0), (60, 60, 60), (30, 60, 150), (150, 40, 40)]
GRID = [(150, 190, 230), (170, 170, 170), (150, 210, 170), (235, 160, 160), (120, 160, 210)]


def pen(digit: np.ndarray, height: int, level: float) -> np.ndarray:
    """An MNIST digit as a smooth stroke ``height`` px tall (float in [0, 1]); a low ``level``
    is a thick marker, a high one a fine pen."""
    ys, xs = np.nonzero(digit > 30)
    crop = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255.0
    f = height / crop.shape[0]
    w = max(1, round(crop.shape[1] * f))
    big = cv2.resize(crop, (w, max(1, height)), interpolation=cv2.INTER_CUBIC)
    edge = min(max(0.05, 1.0 / f), level)  # ~1 px of anti-aliasing; the paper stays paper
    return np.clip((big - level) / edge + 0.5, 0.0, 1.0)


def blend(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, colour) -> None:
    """Blend a pen mask in ``colour`` onto an RGB float canvas at (x, y), clipped."""
    h, w = mask.shape
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    m = mask[y0 - y:y1 - y, x0 - x:x1 - x, None]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - m) + np.asarray(colour, np.float32) * m


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _encode(rng: np.random.Generator, canvas: np.ndarray, noise: float = 2.0,
            blur: float = 0.0, jpeg: bool = False) -> bytes:
    if noise:
        canvas = canvas + rng.normal(0, noise, canvas.shape).astype(np.float32)
    a = np.clip(canvas, 0, 255).astype(np.uint8)
    if blur > 0.2:
        a = cv2.GaussianBlur(a, (0, 0), blur)
    img = Image.fromarray(a)
    buf = io.BytesIO()
    if jpeg:
        img.save(buf, "JPEG", quality=int(rng.integers(60, 95)))
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def _shade(rng: np.random.Generator, canvas: np.ndarray, strength: float) -> np.ndarray:
    """Phone lighting: a linear falloff across the page (multiplicative)."""
    h, w = canvas.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(-1, 1, 2)
    f = 1 - strength * (0.5 + 0.5 * (a * (xx / w - 0.5) + b * (yy / h - 0.5)))
    return canvas * f[:, :, None]


def _hline(c: np.ndarray, y: int, x0: int, x1: int, t: int, colour) -> None:
    c[max(0, y):max(0, y + t), max(0, x0):max(0, x1)] = colour


def _vline(c: np.ndarray, x: int, y0: int, y1: int, t: int, colour) -> None:
    c[max(0, y0):max(0, y1), max(0, x):max(0, x + t)] = colour


def _frame(c: np.ndarray, x0: int, y0: int, x1: int, y1: int, t: int, r: int, colour) -> None:
    """A printed rectangle, ``t`` px lines, corners rounded with radius ``r`` (0: square)."""
    col = tuple(float(v) for v in colour)
    if r <= 0:
        cv2.rectangle(c, (x0, y0), (x1 - 1, y1 - 1), col, t, cv2.LINE_AA)
        return
    for (ax, ay), (bx, by) in (((x0 + r, y0), (x1 - r, y0)), ((x0 + r, y1), (x1 - r, y1)),
                               ((x0, y0 + r), (x0, y1 - r)), ((x1, y0 + r), (x1, y1 - r))):
        cv2.line(c, (ax, ay), (bx, by), col, t, cv2.LINE_AA)
    for (cx, cy), start in (((x0 + r, y0 + r), 180), ((x1 - r, y0 + r), 270),
                            ((x1 - r, y1 - r), 0), ((x0 + r, y1 - r), 90)):
        cv2.ellipse(c, (cx, cy), (r, r), 0, start, start + 90, col, t, cv2.LINE_AA)


def _tilt(rng: np.random.Generator, c: np.ndarray, degrees: float) -> np.ndarray:
    """A page photographed or scanned a little askew (the edges filled with paper)."""
    h, w = c.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-degrees, degrees), 1.0)
    return cv2.warpAffine(c, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def form_box(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A digit written in a printed form cell: a box (square or rounded corners, sometimes
    tinted inside), a comb field (a bottom line with ticks) or a row of cells cut around one,
    alone (a cell cut from a scan) or on a wider page, sometimes a little askew."""
    side = int(rng.integers(36, 150))
    bw, bh = int(side * rng.uniform(0.8, 1.3)), side
    t = int(rng.integers(1, 3 + side // 60))
    margin = 0 if rng.random() < 0.35 else int(side * rng.uniform(0.05, 0.6))
    W, H = bw + 2 * margin, bh + 2 * margin
    paper_c = np.asarray(_pick(rng, PAPERS), np.float32)
    c = np.ones((H, W, 3), np.float32) * paper_c
    ink = np.asarray(_pick(rng, PRINT), np.float32)
    if rng.random() < 0.3:  # printed in a light tone
        ink = ink + (paper_c - ink) * rng.uniform(0.3, 0.6)
    x0, y0, x1, y1 = margin, margin, margin + bw - 1, margin + bh - 1
    style = rng.choice(["box", "box", "comb", "cells"])
    if rng.random() < 0.2:  # a tinted cell
        c[y0:y1, x0:x1] = paper_c * rng.uniform(0.85, 0.95)
    if style == "box":
        r = int(side * rng.uniform(0.05, 0.2)) if rng.random() < 0.35 else 0
        _frame(c, x0, y0, x1, y1, t, r, ink)
    elif style == "comb":
        tick = int(bh * rng.uniform(0.15, 0.35))
        cv2.line(c, (x0 - margin, y1), (x1 + margin, y1), tuple(map(float, ink)), t)
        for x in (x0, x1):
            cv2.line(c, (x, y1 - tick), (x, y1), tuple(map(float, ink)), t)
    else:  # a row of cells: this one and parts of its neighbours
        for y in (y0, y1):
            cv2.line(c, (0, y), (W - 1, y), tuple(map(float, ink)), t)
        for x in range(x0 - bw * 2, W + bw, bw):
            cv2.line(c, (x, y0), (x, y1), tuple(map(float, ink)), t)
    h = int(bh * rng.uniform(0.5, 0.9))
    m = pen(digit, h, rng.uniform(0.3, 0.6))
    x = x0 + int((bw - m.shape[1]) * rng.uniform(0.2, 0.8))
    y = y0 + int((bh - h) * rng.uniform(0.1, 0.9))
    blend(c, m, x, y, _pick(rng, PENS))
    if rng.random() < 0.3:
        c = _tilt(rng, c, 3.0)
    return _encode(rng, c, noise=rng.uniform(0, 4), blur=rng.uniform(0, 0.8),
                   jpeg=rng.random() < 0.3)


def graph_paper(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A digit on squared paper: light grid lines, phone lighting, slight blur, JPEG."""
    H, W = (int(v) for v in rng.integers(120, 360, 2))
    h = int(min(H, W) * rng.uniform(0.35, 0.75))
    pitch = max(5, int(h / rng.uniform(2.0, 6.0)))
    c = np.ones((H, W, 3), np.float32) * np.asarray(_pick(rng, PAPERS[:3]), np.float32)
    line = np.asarray(_pick(rng, GRID), np.float32)
    t = 1 if rng.random() < 0.7 else 2
    ox, oy = (int(v) for v in rng.integers(0, pitch, 2))
    for x in range(ox, W, pitch):
        _vline(c, x, 0, H, t, line)
    for y in range(oy, H, pitch):
        _hline(c, y, 0, W, t, line)
    m = pen(digit, h, rng.uniform(0.3, 0.6))
    x = int((W - m.shape[1]) * rng.uniform(0.15, 0.85))
    y = int((H - h) * rng.uniform(0.15, 0.85))
    blend(c, m, x, y, _pick(rng, PENS))
    c = _shade(rng, c, rng.uniform(0.0, 0.4))
    return _encode(rng, c, noise=rng.uniform(1, 5), blur=rng.uniform(0, 1.0),
                   jpeg=rng.random() < 0.6)


def ruled_paper(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A digit on lined notebook paper, sitting on a line (or crossing it), sometimes beside the
    red margin line."""
    H, W = (int(v) for v in rng.integers(120, 360, 2))
    h = int(min(H, W) * rng.uniform(0.3, 0.6))
    gap = max(8, int(h * rng.uniform(0.7, 1.3)))
    c = np.ones((H, W, 3), np.float32) * np.asarray(_pick(rng, PAPERS[:3]), np.float32)
    line = np.asarray(_pick(rng, GRID), np.float32)
    t = 1 if rng.random() < 0.7 else 2
    oy = int(rng.integers(0, gap))
    for y in range(oy, H, gap):
        _hline(c, y, 0, W, t, line)
    m = pen(digit, h, rng.uniform(0.3, 0.6))
    x = int((W - m.shape[1]) * rng.uniform(0.2, 0.8))
    if rng.random() < 0.3:
        mx = max(0, x - int(rng.integers(4, 20)))
        _vline(c, mx, 0, H, t + 1, np.asarray((220, 90, 90), np.float32))
    drop = int(h * rng.uniform(-0.05, 0.25))  # below the line (a descending stroke)
    rows = [r for r in range(oy, H, gap) if h + 2 < r and r + drop < H - 2]
    base = _pick(rng, rows) if rows else H - 3 - max(0, drop)
    y = base - h + drop
    blend(c, m, x, y, _pick(rng, PENS))
    c = _shade(rng, c, rng.uniform(0.0, 0.4))
    return _encode(rng, c, noise=rng.uniform(1, 5), blur=rng.uniform(0, 1.0),
                   jpeg=rng.random() < 0.6)


def low_res(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A tight 8-16 px cell: the digit touching the borders, either polarity; half the time
    enlarged again (nearest or bilinear, then blurred), as thumbnails and scans are."""
    s = int(rng.integers(8, 17))
    ys, xs = np.nonzero(digit > 30)
    pad = int(rng.integers(0, 3))
    y0, y1 = max(0, ys.min() - pad), min(28, ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(28, xs.max() + 1 + pad)
    crop = digit[y0:y1, x0:x1].astype(np.float32) / 255.0
    if rng.random() < 0.5:  # a square cell: widen the narrow side
        side = max(crop.shape)
        px = (side - crop.shape[1]) // 2
        crop = np.pad(crop, ((0, 0), (px, side - crop.shape[1] - px)))
    f = s / max(crop.shape)
    small = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                       interpolation=cv2.INTER_AREA)
    paper_c = np.asarray(_pick(rng, PAPERS), np.float32)
    ink_c = np.asarray(_pick(rng, PENS), np.float32)
    if rng.random() < 0.25:
        paper_c, ink_c = ink_c * 0.3, paper_c
    a = small[:, :, None]
    c = paper_c * (1 - a) + ink_c * a
    if rng.random() < 0.5:
        k = int(rng.integers(2, 6))
        interp = cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_LINEAR
        c = cv2.resize(c, (c.shape[1] * k, c.shape[0] * k), interpolation=interp)
        return _encode(rng, c, noise=rng.uniform(0, 3), blur=rng.uniform(0, 0.4 * k))
    return _encode(rng, c, noise=rng.uniform(0, 3), jpeg=rng.random() < 0.2)


def answer_line(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A digit written on a short printed line, an answer blank ("Age: __7__") cut out around
    the line: the line 1.3-3.5 times as long as the digit is wide, 1-3 px, printed black,
    grey or in a ruling colour; the digit standing on it or a little above or across it."""
    h = int(rng.integers(40, 140))
    m = pen(digit, h, rng.uniform(0.3, 0.6))
    length = int(m.shape[1] * rng.uniform(1.3, 3.5))
    H, W = int(h * rng.uniform(1.4, 2.0)), int(length * rng.uniform(1.15, 1.6))
    c = np.ones((H, W, 3), np.float32) * np.asarray(_pick(rng, PAPERS), np.float32)
    x0 = int((W - length) * rng.uniform(0.2, 0.8))
    base = int(1.15 * h + (H - 1.15 * h - 6) * rng.uniform(0.2, 0.9))
    _hline(c, base, x0, x0 + length, int(rng.integers(1, 4)),
           np.asarray(_pick(rng, PRINT + GRID), np.float32))
    x = x0 + int((length - m.shape[1]) * rng.uniform(0.15, 0.85))
    blend(c, m, x, max(0, base - h + int(h * rng.uniform(-0.15, 0.1))), _pick(rng, PENS))
    c = _shade(rng, c, rng.uniform(0.0, 0.3))
    return _encode(rng, c, noise=rng.uniform(1, 4), blur=rng.uniform(0, 0.8),
                   jpeg=rng.random() < 0.4)


SITUATIONS: dict[str, Callable[[np.random.Generator, np.ndarray], bytes]] = {
    "form box": form_box,
    "graph paper": graph_paper,
    "ruled paper": ruled_paper,
    "low-res crop": low_res,
}
# Situations written after the shipped model was trained: scored by the benchmark and used to
# tune preprocessing, but not in the training pool (``situation_pool``), whose recipe the
# shipped model records.
LATER_SITUATIONS: dict[str, Callable[[np.random.Generator, np.ndarray], bytes]] = {
    "answer line": answer_line,
}


def boxed_number(rng: np.random.Generator, digits: list[np.ndarray]) -> bytes:
    """Digits in a row of boxes on a form: cells sharing their sides, separate boxes with
    gaps between them (square or rounded), or a comb field (a baseline with ticks); thin or
    bold lines, sometimes printed in a light tone or in tinted cells, a digit now and then
    touching its cell's lines; a little askew, blurred or saved as JPEG at times."""
    side = int(rng.integers(40, 110))
    t = int(rng.integers(1, 3 + side // 60))
    n = len(digits)
    style = rng.choice(["cells", "cells", "boxes", "comb"])
    gap = int(side * rng.uniform(0.1, 0.4)) if style == "boxes" else 0
    pitch = side + gap
    margin = int(side * rng.uniform(0.1, 0.5))
    W, H = n * pitch - gap + 2 * margin, side + 2 * margin
    paper_c = np.asarray(_pick(rng, PAPERS), np.float32)
    c = np.ones((H, W, 3), np.float32) * paper_c
    ink = np.asarray(_pick(rng, PRINT), np.float32)
    if rng.random() < 0.25:  # printed in a light tone
        ink = ink + (paper_c - ink) * rng.uniform(0.3, 0.6)
    x0, y0, x1, y1 = margin, margin, margin + n * pitch - gap, margin + side
    if style != "comb" and rng.random() < 0.15:  # tinted cells
        for k in range(n):
            c[y0:y1, x0 + k * pitch:x0 + k * pitch + side] = paper_c * rng.uniform(0.85, 0.95)
    if style == "cells":
        _hline(c, y0, x0, x1, t, ink)
        _hline(c, y1 - t, x0, x1, t, ink)
        for k in range(n + 1):
            _vline(c, x0 + k * side - (t if k == n else 0), y0, y1, t, ink)
    elif style == "boxes":
        r = int(side * rng.uniform(0.05, 0.2)) if rng.random() < 0.3 else 0
        for k in range(n):
            _frame(c, x0 + k * pitch, y0, x0 + k * pitch + side, y1, t, r, ink)
    else:  # a comb: the baseline and a tick at every division
        tick = int(side * rng.uniform(0.15, 0.4))
        _hline(c, y1 - t, x0, x1, t, ink)
        for k in range(n + 1):
            _vline(c, x0 + k * side - (t if k == n else 0), y1 - tick, y1, t, ink)
    colour = _pick(rng, PENS)
    for k, d in enumerate(digits):
        h = int(side * rng.uniform(0.55, 0.85 if rng.random() < 0.85 else 1.0))
        m = pen(d, h, rng.uniform(0.3, 0.6))
        x = x0 + k * pitch + int((side - m.shape[1]) * rng.uniform(0.25, 0.75))
        y = y0 + int((side - h) * rng.uniform(0.2, 0.8))
        blend(c, m, x, y, colour)
    if rng.random() < 0.3:
        c = _tilt(rng, c, 2.0)
    return _encode(rng, c, noise=rng.uniform(0, 3), blur=rng.uniform(0, 0.6),
                   jpeg=rng.random() < 0.2)


def _glyph(rng: np.random.Generator, size: int, ch: str | None = None) -> Image.Image:
    """A character (by default a random look-alike, or a doodle a third of the time) from a
    random training font (``PEN_SHARE`` of them redrawn with a pen along the glyph's skeleton),
    slanted, thickened and distorted a little like handwriting."""
    families = fonts()
    if ch is None and (not families or rng.random() < 0.35):
        return doodle(rng, size)
    if not families:
        raise RuntimeError("no font installed to print characters with (DejaVu at least: "
                           "`make fonts`)")
    path, cmap = _pick(rng, _pick(rng, families))  # a family first: each as likely
    if ch is None:
        chars = [c for c in LOOKALIKE_CHARS if ord(c) in cmap]
        ch = chars[int(rng.integers(len(chars)))]
    font = ImageFont.truetype(path, int(size * 0.8))
    img = Image.new("L", (size * 2, size * 2), 0)
    d = ImageDraw.Draw(img)
    d.text((size // 3, size // 3), ch, fill=255, font=font)
    box = img.getbbox()
    a = np.asarray(img.crop(box) if box else img)
    if rng.random() < PEN_SHARE:
        a = pen_redrawn(rng, a, size)
    shear = rng.uniform(-0.25, 0.25)
    h, w = a.shape
    M = np.float32([[1, shear, max(0.0, -shear * h)], [0, 1, 0]])
    a = cv2.warpAffine(a, M, (w + int(abs(shear) * h) + 1, h))
    if rng.random() < 0.5:
        k = int(rng.integers(2, 4))
        a = cv2.dilate(a, np.ones((k, k), np.uint8))
    if rng.random() < 0.5:
        a = wobble(rng, a)
    return Image.fromarray(a)


PEN_SHARE = 0.3  # of the characters ``_glyph`` draws from fonts (letters and digits alike)


def lookalike(rng: np.random.Generator) -> bytes:
    """One non-digit: a glyph on paper, a third of the time in a form box or on graph paper."""
    return _on_page(rng, _glyph(rng, int(rng.integers(40, 140))))


def printed_digit(rng: np.random.Generator, label: int) -> bytes:
    """A digit printed (or written in block capitals) exactly as ``lookalike`` draws letters:
    the model must tell letters from digits, not print from handwriting."""
    return _on_page(rng, _glyph(rng, int(rng.integers(40, 140)), str(label)))


def _on_page(rng: np.random.Generator, glyph: Image.Image) -> bytes:
    g = np.asarray(glyph, np.float32) / 255.0
    H = int(g.shape[0] * rng.uniform(1.3, 2.5))
    W = int(max(g.shape[1] * 1.3, H * rng.uniform(0.8, 1.3)))
    c = np.ones((H, W, 3), np.float32) * np.asarray(_pick(rng, PAPERS), np.float32)
    r = rng.random()
    if r < 0.15:
        t = int(rng.integers(1, 3))
        ink = np.asarray(_pick(rng, PRINT), np.float32)
        _hline(c, 0, 0, W, t, ink), _hline(c, H - t, 0, W, t, ink)
        _vline(c, 0, 0, H, t, ink), _vline(c, W - t, 0, H, t, ink)
    elif r < 0.3:
        pitch = max(6, int(g.shape[0] / rng.uniform(2, 5)))
        line = np.asarray(_pick(rng, GRID), np.float32)
        for x in range(int(rng.integers(pitch)), W, pitch):
            _vline(c, x, 0, H, 1, line)
        for y in range(int(rng.integers(pitch)), H, pitch):
            _hline(c, y, 0, W, 1, line)
    x = int((W - g.shape[1]) * rng.uniform(0.2, 0.8))
    y = int((H - g.shape[0]) * rng.uniform(0.2, 0.8))
    blend(c, g, x, y, _pick(rng, PENS))
    return _encode(rng, c, noise=rng.uniform(0, 4), blur=rng.uniform(0, 0.7),
                   jpeg=rng.random() < 0.3)


CROSSED_SEVENS = 0.3  # of the pool's 7s: written with a bar through the stem


def crossed_seven(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray:
    """A 28x28 MNIST 7 as much of Europe writes it: a short bar through the stem, a little
    above or below halfway down, level or slightly tilted, as wide as the pen."""
    ys, xs = np.nonzero(digit > 100)
    if len(ys) == 0:
        return digit
    top, bottom = ys.min(), ys.max()
    y = int(round(top + (bottom - top) * rng.uniform(0.4, 0.62)))
    row = np.nonzero(digit[y] > 100)[0]
    if len(row) == 0:
        return digit
    half = (xs.max() - xs.min() + 1) * rng.uniform(0.18, 0.35)
    cx, dy = row.mean() + rng.uniform(-0.1, 0.1) * half, rng.uniform(-0.15, 0.15) * half
    bar = np.zeros_like(digit)
    s = 16  # sub-pixel end points (cv2's shift: 4 fractional bits)
    cv2.line(bar, (int((cx - half) * s), int((y + dy) * s)), (int((cx + half) * s),
             int((y - dy) * s)), 255, int(rng.integers(2, 4)), cv2.LINE_AA, shift=4)
    return np.maximum(digit, bar)


def _hand_style(rng: np.random.Generator, digit: np.ndarray, label: int) -> np.ndarray:
    """Writing habits MNIST's writers rarely show, given to some of the pool's digits."""
    if label == 7 and rng.random() < CROSSED_SEVENS:
        return crossed_seven(rng, digit)
    return digit


# ---------------------------------------------------------------------------------------------
# Training pools: renders passed through preprocessing, as the model will see them


CHUNK = 500  # renders per task; each chunk has its own seed, so results do not depend on
# how many processes share the work


# The source digits of the pool being rendered: set before the worker processes fork, so that
# they inherit it instead of receiving a copy of the training set with every task.
_SOURCE: tuple[np.ndarray | None, np.ndarray | None] = (None, None)


def _chunk(task: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one chunk and preprocess it: (images, accepted, which source rows)."""
    kind, seed, n = task
    images, labels = _SOURCE
    rng = np.random.default_rng(seed)
    if kind == "situations":
        kinds = list(SITUATIONS.values())
        pick = rng.choice(len(images), n)
        # every sixth a printed digit (the label's), the rest handwritten ones in situations
        items = [printed_digit(rng, int(labels[i])) if k % 6 == 5
                 else kinds[k % len(kinds)](rng, _hand_style(rng, images[i], int(labels[i])))
                 for k, i in enumerate(pick)]
    else:
        pick = np.zeros(n, np.int64)
        items = [lookalike(rng) for _ in range(n)]
    out = np.zeros((n, 28, 28), np.uint8)
    ok = np.zeros(n, bool)
    for i, b in enumerate(items):
        r = preprocess(b)
        out[i], ok[i] = r.image, r.ok
    return out, ok, pick


def _pool(kind: str, images: np.ndarray | None, labels: np.ndarray | None, n: int, seed: int,
          progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` items in chunks (in forked worker processes where the platform has fork)
    and preprocess them; returns the accepted images and their source rows."""
    import multiprocessing as mp
    import os
    from contextlib import nullcontext
    global _SOURCE
    tasks = [(kind, [seed, c], min(CHUNK, n - c * CHUNK)) for c in range(-(-n // CHUNK))]
    workers = min(len(tasks), os.cpu_count() or 1)
    _SOURCE = (images, labels)
    try:
        fork = workers > 1 and "fork" in mp.get_all_start_methods()
        with (mp.get_context("fork").Pool(workers) if fork else nullcontext()) as pool:
            parts = []
            for part in (pool.imap(_chunk, tasks) if fork else map(_chunk, tasks)):
                parts.append(part)
                if progress:
                    progress(len(part[1]))
    finally:
        _SOURCE = (None, None)
    x = np.concatenate([p[0] for p in parts])
    ok = np.concatenate([p[1] for p in parts])
    pick = np.concatenate([p[2] for p in parts])
    return x[ok], pick[ok]


def situation_pool(images: np.ndarray, labels: np.ndarray, n: int, seed: int,
                   progress: Callable[[int], None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` of ``images`` (training digits only) rendered into the situations in turn (every
    sixth label printed as ``printed_digit``, ``CROSSED_SEVENS`` of the 7s crossed) and passed
    through preprocessing:
    (N, 28, 28) uint8 and their labels, the renders that preprocessing declined left out
    (training on what the model will be shown)."""
    x, pick = _pool("situations", images, np.asarray(labels), n, seed, progress)
    return x, np.asarray(labels)[pick]


def lookalike_pool(n: int, seed: int, progress: Callable[[int], None] | None = None
                   ) -> np.ndarray:
    """Up to ``n`` look-alike non-digits as preprocessing presents them (those it rejects
    outright need no training): hard negatives for outlier exposure."""
    return _pool("lookalikes", None, None, n, seed, progress)[0]
