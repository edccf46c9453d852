"""Renderer B: the situations of issue 14, rendered for *scoring only*.

Written independently of renderer A (``digitlab.synth``, which tuning and training use), so
that a score on these images says how digit reading fares on pictures the tuning never saw.
``benchmarks/realworld.py --renderer b`` scores them on MNIST *test* digits:

    python benchmarks/realworld.py --renderer b --n 500   # full table, 6-7 minutes on 2 cores
    python benchmarks/realworld.py --renderer b --n 20    # smoke: end to end in about 25 s
    python benchmarks/renderer_b.py --out /tmp/renderer_b_samples --per 8   # example PNGs

Interface (renderer A exposes the same):

- ``SITUATIONS``: set name -> ``f(rng, digit) -> bytes``; ``digit`` is an MNIST 28x28 uint8
  array (bright on dark), the result an encoded PNG or JPEG. Sets: "form box", "graph paper",
  "ruled paper", "low-res crop", "answer line" (renderer A keeps that one in
  ``LATER_SITUATIONS``, out of its training pool).
- ``lookalike(rng) -> bytes``: one image of something that is not a digit.
- ``boxed_number(rng, digits) -> bytes``: the digits, in order, as a number in a row of boxes.

Targets for the preprocessing and model (issue 14), 500+ test digits per set: form box >= 98%,
graph and ruled paper >= 98%, low-res crops >= 97%, look-alike junk rejected >= 95%, number in
boxes >= 97% exact (and clean MNIST rejected < 1%).

Look-alikes are letters, signs, arrows and shapes, drawn in the machine's fonts (.ttf and .otf
under the usual font folders; with none, only the hand-drawn kind) or as jittered pen strokes,
on plain paper, in a form box or on graph or ruled paper. Left out because a person could fairly
read them as a digit: O o Q (0), I l i j | / \\ ( ) (1), z and a hand-drawn Z (2; a printed Z
with its sharp corners stays), S s § (5), b G (6), g q (9). Kept although they have a digit
cousin, because their distinguishing part is drawn plainly: B (straight spine), D (straight
spine and corners), Z printed, A, T, U, Y, a, e, h, ? ! $ & and the arrows.

The output depends only on the Generator's state and the fonts installed.
"""

from __future__ import annotations

import argparse
import glob
import io
import math
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# (small shared helpers, and the font families scoring prints with)
from realworld import lighting, paste, pen_mask, rotate, scoring_font  # noqa: E402

Ink = Callable[[int], np.ndarray]  # longest side in px -> pen mask, float in [0, 1]
RGB = tuple[int, int, int]

# Ballpoints and pencils people fill forms with (weights: mostly blue and black).
PENS_B: list[RGB] = [(15, 15, 25), (30, 35, 110), (15, 60, 175), (45, 45, 50), (85, 85, 90),
                     (165, 25, 35), (20, 95, 55)]
PEN_P = [0.28, 0.22, 0.2, 0.1, 0.08, 0.07, 0.05]
# Printed lines: form boxes (black and the "drop-out" colours of OCR forms) and paper rulings.
BOX_COLOURS: list[RGB] = [(25, 25, 25), (95, 95, 95), (80, 130, 200), (140, 180, 230),
                          (215, 85, 75), (235, 140, 90), (90, 160, 110), (165, 165, 165)]
GRID_COLOURS: list[RGB] = [(120, 165, 220), (150, 190, 235), (160, 160, 160), (125, 185, 135),
                           (235, 145, 135), (185, 165, 220)]
RULE_COLOURS: list[RGB] = [(120, 165, 220), (150, 190, 235), (165, 165, 165), (185, 165, 220)]
MARGIN_COLOURS: list[RGB] = [(225, 80, 80), (240, 130, 140), (210, 60, 90)]
PAPER_B: list[RGB] = [(255, 255, 255), (252, 251, 246), (248, 246, 236), (244, 246, 250),
                      (250, 247, 240)]
FILLS: list[RGB] = [(255, 246, 215), (232, 242, 255), (255, 236, 236), (236, 248, 236),
                    (240, 240, 240)]


def _pick(rng: np.random.Generator, seq, p=None):
    return seq[int(rng.choice(len(seq), p=p))]


def _pen(rng: np.random.Generator) -> RGB:
    return _pick(rng, PENS_B, PEN_P)


# ---------------------------------------------------------------------------------------------
# Drawing helpers


def _layer(h: int, w: int, draw: Callable[[ImageDraw.ImageDraw, int], None], ss: int = 4
           ) -> np.ndarray:
    """Antialiased vector drawing: ``draw(d, ss)`` at ``ss`` times the size, box-averaged down.
    Returns coverage in [0, 1], shape (h, w)."""
    img = Image.new("L", (w * ss, h * ss), 0)
    draw(ImageDraw.Draw(img), ss)
    return np.asarray(img.reduce(ss), np.float32) / 255.0


def _tint(canvas: np.ndarray, cover: np.ndarray, colour, alpha: float = 1.0) -> None:
    m = (cover * alpha)[:, :, None]
    canvas *= 1 - m
    canvas += m * np.asarray(colour, np.float32)


def _lines(coord: np.ndarray, pitch: float, offset: float, width: float) -> np.ndarray:
    """Coverage of parallel lines ``width`` px wide every ``pitch`` px along ``coord``."""
    d = np.abs((coord - offset + pitch / 2) % pitch - pitch / 2)
    return np.clip(width / 2 + 0.5 - d, 0.0, 1.0)


def _rotate_crop(canvas: np.ndarray, degrees: float, pad: int, fill) -> np.ndarray:
    """Turn the whole page a little (print and ink together), then cut ``pad`` off each side."""
    if degrees:
        img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        img = img.rotate(degrees, Image.Resampling.BICUBIC, fillcolor=tuple(int(v) for v in fill))
        canvas = np.asarray(img, np.float32)
    return canvas[pad:canvas.shape[0] - pad, pad:canvas.shape[1] - pad].copy()


def _encode(img: Image.Image, jpeg: int | None) -> bytes:
    buf = io.BytesIO()
    if jpeg is not None:
        img.save(buf, "JPEG", quality=int(jpeg))
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def _scan(rng: np.random.Generator, canvas: np.ndarray) -> bytes:
    """A flatbed scan or a PDF export: little noise, little blur, sometimes grey or JPEG."""
    canvas = canvas + rng.normal(0, rng.uniform(0.5, 4), canvas.shape).astype(np.float32)
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.7)))
    if rng.random() < 0.3:
        img = img.convert("L")
    return _encode(img, int(rng.integers(70, 96)) if rng.random() < 0.4 else None)


def _phone(rng: np.random.Generator, canvas: np.ndarray) -> bytes:
    """A phone photo: uneven light, a colour cast, sensor noise, slight blur, JPEG."""
    canvas = lighting(rng, canvas, rng.uniform(0.15, 0.55))
    canvas = canvas * rng.uniform(0.93, 1.04, 3).astype(np.float32)
    canvas = canvas + rng.normal(0, rng.uniform(2, 6), canvas.shape).astype(np.float32)
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    scale = min(max(min(img.size) / 200, 0.5), 1.5)  # focus blur grows with the picture
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * scale))
    return _encode(img, int(rng.integers(55, 93)))


def _finish(rng: np.random.Generator, canvas: np.ndarray, p_phone: float) -> bytes:
    return _phone(rng, canvas) if rng.random() < p_phone else _scan(rng, canvas)


def _digit_ink(rng: np.random.Generator, digit: np.ndarray, level: float | None = None) -> Ink:
    """An MNIST digit as a pen: ballpoint to felt tip (``level``: see pen_mask), a little
    turned."""
    level = rng.uniform(0.33, 0.58) if level is None else level
    turn = rng.uniform(-6, 6) if rng.random() < 0.5 else 0.0

    def ink(h: int) -> np.ndarray:
        m = pen_mask(digit, max(4, int(h)), level)
        return rotate(m, turn) if turn else m
    return ink


# ---------------------------------------------------------------------------------------------
# Form boxes and rows of boxes

CELL_STYLES = ("rect", "rounded", "comb", "row", "comb_row")


def _cell_path(x0: float, y0: float, x1: float, y1: float, r: float) -> list[tuple[float, float]]:
    """A closed rectangle outline with corners rounded by ``r`` px (0: sharp)."""
    if r <= 0:
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    pts = []
    for cx, cy, a0 in ((x1 - r, y0 + r, -90), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90),
                       (x0 + r, y0 + r, 180)):
        pts += [(cx + r * math.cos(math.radians(a0 + t)), cy + r * math.sin(math.radians(a0 + t)))
                for t in range(0, 91, 15)]
    return pts + [pts[0]]


def _draw_cells(h: int, w: int, cells: list[tuple[float, float, float, float]], style: str,
                lw: int, tick: float, radius: float) -> np.ndarray:
    """Coverage of the printed lines of a row of cells (x0, y0, x1, y1; inner edges)."""
    y0, y1 = cells[0][1], cells[0][3]
    xs = sorted({c[0] for c in cells} | {c[2] for c in cells})

    def draw(d: ImageDraw.ImageDraw, s: int) -> None:
        half = lw / 2

        def line(pts):
            d.line([(x * s, y * s) for x, y in pts], fill=255, width=max(1, round(lw * s)),
                   joint="curve")
        if style in ("rect", "rounded", "separate"):
            for x0, _, x1, _ in cells:
                line(_cell_path(x0 - half, y0 - half, x1 + half, y1 + half, radius))
        elif style == "joined":  # one frame, full-height dividers
            line(_cell_path(xs[0] - half, y0 - half, xs[-1] + half, y1 + half, radius))
            for x in xs[1:-1]:
                line([(x, y0), (x, y1)])
        elif style == "joined_ticks":  # one frame, dividers only up from the bottom
            line(_cell_path(xs[0] - half, y0 - half, xs[-1] + half, y1 + half, 0))
            for x in xs[1:-1]:
                line([(x, y1), (x, y1 - tick * (y1 - y0))])
        elif style in ("comb", "comb_row"):  # a baseline with ticks
            left, right = (0, w) if style == "comb_row" else (xs[0] - half, xs[-1] + half)
            line([(left, y1 + half), (right, y1 + half)])
            for x in xs:
                line([(x, y1 + half), (x, y1 - tick * (y1 - y0))])
        elif style == "row":  # part of a longer row: lines run off the crop
            line([(0, y0 - half), (w, y0 - half)])
            line([(0, y1 + half), (w, y1 + half)])
            for x in xs:
                line([(x, y0 - half), (x, y1 + half)])
        else:
            raise ValueError(style)
    return _layer(h, w, draw)


def _form_paper(rng: np.random.Generator, h: int, w: int, cells, style: str) -> np.ndarray:
    page = _pick(rng, PAPER_B)
    c = np.ones((h, w, 3), np.float32) * np.asarray(page, np.float32)
    if style not in ("comb", "comb_row") and rng.random() < 0.25:  # tinted field background
        fill = np.asarray(_pick(rng, FILLS), np.float32)
        for x0, y0, x1, y1 in cells:
            c[int(y0):int(y1), int(x0):int(x1)] = fill
    return c


def _form_cell(rng: np.random.Generator, ink: Ink, pen: RGB) -> bytes:
    """One cell of a printed form with the ink written in it, cropped around the cell."""
    ch = int(rng.integers(36, 150))  # inner height of the cell, px
    cw = int(ch * rng.uniform(0.75, 1.3))
    lw = int(rng.integers(1, 5))
    style = _pick(rng, CELL_STYLES, [0.35, 0.15, 0.2, 0.15, 0.15])
    over = rng.random() < 0.25  # the ink touches or crosses the printed line
    dh = int(ch * (rng.uniform(0.8, 1.05) if over else rng.uniform(0.55, 0.85)))
    m = ink(dh)
    if not over and m.shape[1] > 0.9 * cw:  # a wide one still fits the box
        m = ink(int(dh * 0.9 * cw / m.shape[1]))
    spill, side = 0, "none"
    if over:
        side = _pick(rng, ("bottom", "top", "left", "right"), [0.45, 0.2, 0.175, 0.175])
        spill = int(dh * rng.uniform(0.05, 0.25))
    wide = style in ("row", "comb_row")
    mx = int(cw * (rng.uniform(0.15, 0.6) if wide else rng.uniform(0.08, 0.45))) + lw
    my = int(ch * rng.uniform(0.08, 0.45)) + lw
    mx, my = max(mx, spill + 3), max(my, spill + 3)
    pad = int(0.08 * (cw + ch + 2 * mx + 2 * my))
    H, W = ch + 2 * my + 2 * pad, cw + 2 * mx + 2 * pad
    x0, y0 = pad + mx, pad + my
    cells = [(x0, y0, x0 + cw, y0 + ch)]
    if wide:  # the neighbours, cut by the crop
        cells = [(x0 + k * cw, y0, x0 + (k + 1) * cw, y0 + ch) for k in range(-3, 4)]
    c = _form_paper(rng, H, W, cells, style)
    radius = ch * rng.uniform(0.08, 0.25) if style == "rounded" else 0
    cover = _draw_cells(H, W, cells, style, lw, rng.uniform(0.15, 0.5), radius)
    _tint(c, cover, _pick(rng, BOX_COLOURS), rng.uniform(0.6, 1.0))
    mh, mw = m.shape
    x = x0 + (cw - mw) // 2 + int(rng.uniform(-0.08, 0.08) * cw)
    y = y0 + (ch - mh) // 2 + int(rng.uniform(-0.08, 0.08) * ch)
    if side == "bottom":
        y = y0 + ch - mh + spill
    elif side == "top":
        y = y0 - spill
    elif side == "left":
        x = x0 - spill
    elif side == "right":
        x = x0 + cw - mw + spill
    paste(c, m, x, y, pen)
    page = c[1, 1].copy()
    c = _rotate_crop(c, rng.uniform(-3, 3) if rng.random() < 0.5 else 0.0, pad, page)
    return _finish(rng, c, 0.4)


def form_box(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A digit written in a printed form box: rectangle, rounded, comb cell or a cell of a longer
    row; lines 1-4 px in black or a drop-out colour; the digit may cross the line."""
    return _form_cell(rng, _digit_ink(rng, digit), _pen(rng))


def boxed_number(rng: np.random.Generator, digits: list[np.ndarray]) -> bytes:
    """The digits, left to right, in a row of boxes: separate boxes, one frame with dividers
    (full or bottom ticks) or a comb; sometimes spare empty boxes after (or before) them."""
    k = len(digits)
    spare = int(rng.integers(1, 3)) if rng.random() < 0.25 else 0
    right_aligned = rng.random() < 0.3
    ch = int(rng.integers(36, 110))
    cw = int(ch * rng.uniform(0.7, 1.1))
    lw = int(rng.integers(1, 4))
    style = _pick(rng, ("separate", "joined", "joined_ticks", "comb"), [0.3, 0.3, 0.15, 0.25])
    gap = int(cw * rng.uniform(0.1, 0.4)) + lw if style == "separate" else 0
    mx, my = int(ch * rng.uniform(0.15, 0.6)) + lw, int(ch * rng.uniform(0.25, 0.6)) + lw
    n = k + spare
    pad = int(0.06 * (n * (cw + gap) + ch))
    W = n * cw + (n - 1) * gap + 2 * mx + 2 * pad
    H = ch + 2 * my + 2 * pad
    x0, y0 = pad + mx, pad + my
    cells = [(x0 + j * (cw + gap), y0, x0 + j * (cw + gap) + cw, y0 + ch) for j in range(n)]
    c = _form_paper(rng, H, W, cells, style)
    radius = ch * rng.uniform(0.05, 0.2) if style == "separate" and rng.random() < 0.3 else 0
    cover = _draw_cells(H, W, cells, style, lw, rng.uniform(0.25, 0.6), radius)
    _tint(c, cover, _pick(rng, BOX_COLOURS), rng.uniform(0.6, 1.0))
    pen, level = _pen(rng), rng.uniform(0.33, 0.58)
    size = rng.uniform(0.55, 0.82)
    used = cells[spare:] if right_aligned else cells[:k]
    for d, (cx0, cy0, cx1, cy1) in zip(digits, used):
        ink = _digit_ink(rng, d, level)
        dh = int(ch * min(0.95, size * rng.uniform(0.92, 1.08)))
        m = ink(dh)
        if m.shape[1] > 0.88 * cw:  # stays in its own box, clear of the neighbours
            m = ink(int(dh * 0.88 * cw / m.shape[1]))
        mh, mw = m.shape
        x = cx0 + (cw - mw) // 2 + int(rng.uniform(-0.08, 0.08) * cw)
        y = cy0 + (ch - mh) // 2 + int(rng.uniform(-0.08, 0.08) * ch)
        if rng.random() < 0.12:  # runs over the bottom or top line
            s = int(mh * rng.uniform(0.05, 0.2))
            y = cy0 + ch - mh + s if rng.random() < 0.7 else cy0 - s
        paste(c, m, x, y, pen)
    page = c[1, 1].copy()
    c = _rotate_crop(c, rng.uniform(-2.5, 2.5) if rng.random() < 0.5 else 0.0, pad, page)
    return _finish(rng, c, 0.4)


# ---------------------------------------------------------------------------------------------
# Graph paper and ruled paper (phone photos, mostly)


def _sheet(rng: np.random.Generator, dh: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    H, W = (int(dh * v) for v in rng.uniform(1.25, 2.4, 2))
    pad = int(0.06 * (H + W))
    H, W = H + 2 * pad, W + 2 * pad
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    c = np.ones((H, W, 3), np.float32) * np.asarray(_pick(rng, PAPER_B), np.float32)
    return c, pad, yy, xx


def _place(rng: np.random.Generator, lo: float, hi: float, size: int, pad: int, ink: int) -> int:
    """Where the ink starts along one side: at lo..hi of the free room, kept a little away
    from the edges so that turning the page does not cut it."""
    keep = int(0.04 * (size - 2 * pad))
    return pad + keep + int(rng.uniform(lo, hi) * max(0, size - 2 * pad - 2 * keep - ink))


def _graph(rng: np.random.Generator, ink: Ink, pen: RGB) -> bytes:
    dh = int(rng.integers(50, 200))
    c, pad, yy, xx = _sheet(rng, dh)
    pitch = max(6.0, dh / rng.uniform(1.0, 6.0))  # the ink spans 1 (coarse) to 6 (fine) cells
    lw = 2.0 if pitch >= 15 and rng.random() < 0.3 else 1.0
    colour, alpha = _pick(rng, GRID_COLOURS), rng.uniform(0.35, 0.85)
    ox, oy = rng.uniform(0, pitch, 2)
    if rng.random() < 0.12:  # dot grid
        dx = (xx - ox + pitch / 2) % pitch - pitch / 2
        dy = (yy - oy + pitch / 2) % pitch - pitch / 2
        cover = np.clip(lw + 0.3 - np.sqrt(dx * dx + dy * dy), 0.0, 1.0)
    else:
        cover = np.maximum(_lines(xx, pitch, ox, lw), _lines(yy, pitch, oy, lw))
        if rng.random() < 0.3:  # engineering paper: every fifth line stronger
            major = np.maximum(_lines(xx, 5 * pitch, ox, lw + 1), _lines(yy, 5 * pitch, oy, lw + 1))
            cover = np.maximum(cover * 0.7, major)
    _tint(c, cover, colour, alpha)
    m = ink(dh)
    H, W = c.shape[:2]
    x = _place(rng, 0.15, 0.85, W, pad, m.shape[1])
    y = _place(rng, 0.15, 0.85, H, pad, m.shape[0])
    paste(c, m, x, y, pen)
    c = _rotate_crop(c, rng.uniform(-4, 4), pad, c[1, 1].copy())
    return _finish(rng, c, 0.8)


def graph_paper(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A digit on graph paper (blue, grey, green, red or purple grid; 1 to 6 cells per digit
    height; dot grids and engineering paper too), photographed or scanned."""
    return _graph(rng, _digit_ink(rng, digit), _pen(rng))


def _ruled(rng: np.random.Generator, ink: Ink, pen: RGB) -> bytes:
    dh = int(rng.integers(50, 200))
    c, pad, yy, xx = _sheet(rng, dh)
    H, W = c.shape[:2]
    m = ink(dh)
    x = _place(rng, 0.2, 0.85, W, pad, m.shape[1])
    y = _place(rng, 0.15, 0.85, H, pad, m.shape[0])
    base = y + m.shape[0] - rng.uniform(-0.12, 0.04) * dh  # the ink stands on a line
    seyes = rng.random() < 0.15
    colour, alpha = _pick(rng, RULE_COLOURS), rng.uniform(0.4, 0.85)
    if seyes:  # French ruling: fine lines every quarter, verticals every pitch
        pitch = dh / rng.uniform(0.5, 1.0)
        cover = np.maximum(0.45 * _lines(yy, pitch / 4, base, 1.0), _lines(yy, pitch, base, 1.0))
        cover = np.maximum(cover, 0.6 * _lines(xx, pitch, rng.uniform(0, pitch), 1.0))
    else:
        pitch = dh / rng.uniform(0.6, 1.8)  # between two lines, or written across several
        cover = _lines(yy, pitch, base, float(rng.integers(1, 3)))
    _tint(c, cover, colour, alpha)
    if seyes or rng.random() < 0.4:  # the margin, left of the writing
        mx = x - int(dh * rng.uniform(0.15, 1.0))
        if mx > 2:
            mcover = _lines(xx, 10 * W, mx, float(rng.integers(1, 3)))
            if rng.random() < 0.3:
                mcover = np.maximum(mcover, _lines(xx, 10 * W, mx - rng.integers(3, 7), 1.0))
            _tint(c, mcover, _pick(rng, MARGIN_COLOURS), rng.uniform(0.5, 0.9))
    paste(c, m, x, y, pen)
    c = _rotate_crop(c, rng.uniform(-3, 3), pad, c[1, 1].copy())
    return _finish(rng, c, 0.8)


def ruled_paper(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A digit on ruled notebook paper, standing on a line or across lines; sometimes a red
    margin (single or double); 15% French (Seyes) ruling; photographed or scanned."""
    return _ruled(rng, _digit_ink(rng, digit), _pen(rng))


# ---------------------------------------------------------------------------------------------
# Low-resolution crops


def low_res_crop(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A tight crop of a digit, 8-16 px on the long side (area-averaged down), ink touching the
    borders; sometimes scaled back up (nearest, or bilinear and blurred); dark on light or light
    on dark."""
    L = int(rng.integers(8, 17))
    f = 8  # draw at 8x, then average down
    level = rng.uniform(0.3, 0.55)
    if rng.random() < 0.5:  # tight box around the ink, at least 0.6 as wide as tall
        m = pen_mask(digit, int(L * f * rng.uniform(0.9, 1.0)), level)
        h = L * f
        w = max(m.shape[1] + int(rng.integers(0, f)), int(0.6 * h), 8 * f)
    else:  # the digit's cell, not quite square
        h = L * f
        w = int(h * rng.uniform(0.75, 1.0))
        m = pen_mask(digit, int(h * rng.uniform(0.78, 1.0)), level)
        if m.shape[1] > w:  # a wide digit: fit the width instead
            m = pen_mask(digit, int(max(m.shape) * w / m.shape[1]), level)
    if rng.random() < 0.75:
        bg, fg = rng.uniform(215, 255), rng.uniform(0, 90)
    else:
        bg, fg = rng.uniform(0, 60), rng.uniform(190, 255)
    tone = rng.uniform(0.95, 1.05, 3) if rng.random() < 0.5 else np.ones(3)
    c = np.ones((h, w, 3), np.float32) * bg
    # off centre by up to a pixel, but never cut: the ink touches the border at most
    x = int(np.clip((w - m.shape[1]) // 2 + rng.integers(-f, f + 1), min(0, (w - m.shape[1]) // 2),
                    max(0, w - m.shape[1])))
    y = int(np.clip((h - m.shape[0]) // 2 + rng.integers(-f, f + 1), min(0, (h - m.shape[0]) // 2),
                    max(0, h - m.shape[0])))
    paste(c, m, x, y, (fg, fg, fg))
    img = Image.fromarray(np.clip(c * tone, 0, 255).astype(np.uint8))
    img = img.resize((max(1, round(w / f)), L), Image.Resampling.BOX)
    if rng.random() < 0.5:
        a = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(1, 5), (L, img.width, 3))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:  # someone scaled the thumbnail back up
        k = int(rng.integers(2, 9))
        if rng.random() < 0.5:
            img = img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
        else:
            img = img.resize((img.width * k, img.height * k), Image.Resampling.BILINEAR)
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.45) * k))
    if rng.random() < 0.4:
        img = img.convert("L")
    if min(img.size) >= 24 and rng.random() < 0.3:  # a JPEG thumbnail (never the 8x8 blocks
        buf = io.BytesIO()                         # of a crop this small: nobody reads those)
        img.save(buf, "JPEG", quality=int(rng.integers(75, 96)), subsampling=0)
        return buf.getvalue()
    return _encode(img, None)


def _answer(rng: np.random.Generator, ink: Ink, pen: RGB) -> bytes:
    dh = int(rng.integers(45, 180))
    m = ink(dh)
    length = m.shape[1] * rng.uniform(1.4, 4.0)
    sheet, pad, _, _ = _sheet(rng, dh)
    H = sheet.shape[0]
    W = int(length + 2 * pad + dh * rng.uniform(0.1, 0.6))  # cut out around the line
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    c = np.ones((H, W, 3), np.float32) * sheet[0, 0]
    x0 = pad + rng.uniform(0.02, 0.5) * max(1.0, W - 2 * pad - length)
    x = int(x0 + rng.uniform(0.1, 0.9) * (length - m.shape[1]))
    y = _place(rng, 0.1, 0.6, H, pad, m.shape[0])
    base = y + m.shape[0] - rng.uniform(-0.1, 0.05) * dh  # the ink stands on the line
    width = rng.uniform(0.8, 2.5)
    along = np.clip(np.minimum(xx - x0, x0 + length - xx) + 0.5, 0.0, 1.0)
    dark = rng.random() < 0.5
    colour = _pick(rng, [(30, 30, 30), (90, 90, 90)] if dark else RULE_COLOURS)
    _tint(c, _lines(yy, 10 * H, base, width) * along, colour, rng.uniform(0.6, 1.0))
    paste(c, m, x, y, pen)
    c = _rotate_crop(c, rng.uniform(-2, 2), pad, c[1, 1].copy())
    return _finish(rng, c, 0.6)


def answer_line(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    """A digit written on an answer blank's printed line, cut out around the line; scanned
    or photographed."""
    return _answer(rng, _digit_ink(rng, digit), _pen(rng))


SITUATIONS: dict[str, Callable[[np.random.Generator, np.ndarray], bytes]] = {
    "form box": form_box,
    "graph paper": graph_paper,
    "ruled paper": ruled_paper,
    "low-res crop": low_res_crop,
    "answer line": answer_line,
}


# ---------------------------------------------------------------------------------------------
# Look-alikes: letters, signs, arrows and shapes that are not digits

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 0) -> Stroke:
    """Points of an elliptic arc, angles in degrees counter-clockwise from 3 o'clock (y down)."""
    n = n or max(6, int(abs(a1 - a0) / 12))
    return [(cx + rx * math.cos(math.radians(a)), cy - ry * math.sin(math.radians(a)))
            for a in np.linspace(a0, a1, n + 1)]


def _smooth(pts: Stroke, rounds: int = 3) -> Stroke:
    """Chaikin corner cutting: a polyline through control points becomes a curve."""
    for _ in range(rounds):
        out = [pts[0]]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            out += [(0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1),
                    (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1)]
        pts = out + [pts[-1]]
    return pts


def _dot(x: float, y: float) -> Stroke:
    return [(x, y)]


_P_TOP = [(0.0, 0.0), (0.45, 0.0)] + _arc(0.45, 0.26, 0.35, 0.26, 90, -90) + [(0.0, 0.52)]
# Hand-drawn forms in a unit box (y down). Stroke order and direction as people write them.
HAND: dict[str, list[Stroke]] = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.62), (0.78, 0.62)]],
    "B": [[(0, 0), (0, 1)],
          [(0, 0), (0.45, 0)] + _arc(0.45, 0.24, 0.3, 0.24, 90, -90) + [(0, 0.48)],
          [(0, 0.48), (0.5, 0.48)] + _arc(0.5, 0.74, 0.36, 0.26, 90, -90) + [(0, 1)]],
    "C": [_arc(0.5, 0.5, 0.5, 0.5, 50, 310)],
    "D": [[(0, 0), (0, 1)], [(0, 0), (0.35, 0)] + _arc(0.35, 0.5, 0.55, 0.5, 90, -90) + [(0, 1)]],
    "E": [[(0.9, 0), (0, 0), (0, 1), (0.9, 1)], [(0, 0.5), (0.7, 0.5)]],
    "F": [[(0.9, 0), (0, 0), (0, 1)], [(0, 0.48), (0.7, 0.48)]],
    "H": [[(0, 0), (0, 1)], [(0.85, 0), (0.85, 1)], [(0, 0.5), (0.85, 0.5)]],
    "K": [[(0, 0), (0, 1)], [(0.85, 0), (0, 0.58)], [(0.3, 0.38), (0.9, 1)]],
    "L": [[(0, 0), (0, 1), (0.75, 1)]],
    "M": [[(0, 1), (0, 0), (0.5, 0.62), (1, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (0.85, 1), (0.85, 0)]],
    "P": [[(0, 1), (0, 0)], _P_TOP],
    "R": [[(0, 1), (0, 0)], _P_TOP, [(0.35, 0.52), (0.85, 1)]],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "U": [[(0, 0)] + _arc(0.45, 0.55, 0.45, 0.45, 180, 360) + [(0.9, 0)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (0.9, 1)], [(0.9, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
    "a": [_arc(0.42, 0.55, 0.38, 0.43, 40, 380), [(0.8, 0.12), (0.8, 0.9), (0.95, 1.0)]],
    "e": [[(0.1, 0.5), (0.9, 0.5)] + _arc(0.5, 0.5, 0.4, 0.46, 0, 320)],
    "h": [[(0, 0), (0, 1)], _arc(0.3, 0.62, 0.3, 0.25, 180, 0) + [(0.6, 1)]],
    "k": [[(0, 0), (0, 1)], [(0.6, 0.4), (0.03, 0.75), (0.65, 1)]],
    "m": [[(0, 1), (0, 0.05)], _arc(0.22, 0.32, 0.22, 0.27, 180, 0) + [(0.44, 1)],
          _arc(0.66, 0.32, 0.22, 0.27, 180, 0) + [(0.88, 1)]],
    "n": [[(0, 1), (0, 0.05)], _arc(0.3, 0.35, 0.3, 0.3, 180, 0) + [(0.6, 1)]],
    "r": [[(0, 1), (0, 0.05)], _arc(0.35, 0.42, 0.35, 0.34, 180, 45)],
    "w": [[(0, 0), (0.22, 1), (0.45, 0.3), (0.68, 1), (0.9, 0)]],
    "x": [[(0, 0), (0.8, 1)], [(0.8, 0), (0, 1)]],
    "+": [[(0.5, 0.08), (0.5, 0.92)], [(0.08, 0.5), (0.92, 0.5)]],
    "=": [[(0.05, 0.33), (0.95, 0.33)], [(0.05, 0.67), (0.95, 0.67)]],
    "%": [[(0.85, 0), (0.15, 1)], _arc(0.22, 0.18, 0.16, 0.17, 0, 360),
          _arc(0.78, 0.82, 0.16, 0.17, 0, 360)],
    "#": [[(0.38, 0), (0.25, 1)], [(0.78, 0), (0.65, 1)], [(0.05, 0.33), (0.98, 0.33)],
          [(0.0, 0.67), (0.92, 0.67)]],
    "&": [_smooth([(0.95, 1.0), (0.25, 0.38), (0.22, 0.1), (0.42, 0.0), (0.62, 0.1), (0.55, 0.32),
                   (0.1, 0.62), (0.1, 0.9), (0.38, 1.02), (0.65, 0.88), (0.85, 0.58)], 2)],
    "@": [_arc(0.48, 0.52, 0.18, 0.2, 30, 390),
          [(0.66, 0.32), (0.66, 0.66), (0.8, 0.7)] + _arc(0.5, 0.5, 0.48, 0.48, -5, 290)],
    "*": [[(0.5, 0), (0.5, 1)], [(0.07, 0.25), (0.93, 0.75)], [(0.93, 0.25), (0.07, 0.75)]],
    "?": [_arc(0.5, 0.3, 0.35, 0.28, 160, -90) + [(0.5, 0.75)], _dot(0.5, 0.96)],
    "!": [[(0.5, 0), (0.5, 0.72)], _dot(0.5, 0.96)],
    "$": [_arc(0.5, 0.28, 0.36, 0.23, 25, 270) + _arc(0.5, 0.74, 0.36, 0.24, 90, -155),
          [(0.5, -0.1), (0.5, 1.1)]],
    "<": [[(0.85, 0.1), (0.15, 0.5), (0.85, 0.9)]],
    ">": [[(0.15, 0.1), (0.85, 0.5), (0.15, 0.9)]],
    "smiley": [_arc(0.5, 0.5, 0.5, 0.5, 0, 360, 40), _dot(0.33, 0.36), _dot(0.67, 0.36),
               _arc(0.5, 0.52, 0.28, 0.22, 200, 340)],
    "frown": [_arc(0.5, 0.5, 0.5, 0.5, 0, 360, 40), _dot(0.33, 0.36), _dot(0.67, 0.36),
              _arc(0.5, 0.9, 0.25, 0.17, 30, 150)],
    "check": [[(0, 0.55), (0.33, 0.95), (1, 0)]],
    "cross": [_smooth([(0, 0.05), (0.5, 0.5), (1, 1)], 1), _smooth([(0.95, 0), (0.5, 0.45),
                                                                     (0.05, 0.95)], 1)],
    "star": [[(0.5 + 0.5 * math.cos(math.radians(90 + 144 * k)),
               0.5 - 0.5 * math.sin(math.radians(90 + 144 * k))) for k in range(6)]],
    "heart": [_smooth([(0.5, 0.25), (0.3, 0.0), (0.0, 0.15), (0.05, 0.5), (0.5, 1.0)], 2),
              _smooth([(0.5, 0.25), (0.7, 0.0), (1.0, 0.15), (0.95, 0.5), (0.5, 1.0)], 2)],
}
UPPER = "ABCDEFHKLMNPRTUVWXY"  # + Z, printed only
LOWER = "aehkmnrwx"
SIGNS = "+=%#&@*?!$<>"
SHAPES = ("smiley", "frown", "check", "cross", "star", "heart", "arrow")
# From the fonts, where a font has them (§ ∂ ∞ and circled or dingbat digits left out).
FONT_SYMBOLS = ("✓✔✗✘★☆✶✱☺☹♥♡♠♣♦☀☂☎✈✉✂⌘→←↑↓↔↕⇒⇐⇑⇓⇔➔➜➤↗↘↖↙↺↻"
                "€£¥©®™†‡¶±÷×≠≈≤≥√∑Ω∆")
EXCLUDED = "Oo Q Il ij | / \\ ( ) z S s § b G g q"  # see the module docstring


def _arrow(rng: np.random.Generator) -> list[Stroke]:
    """An arrow pointing right (turned by the caller): straight, double-headed, double-shafted
    or curved."""
    head = rng.uniform(0.18, 0.35)
    spread = rng.uniform(0.12, 0.25)
    kind = _pick(rng, ("plain", "double", "fat", "curved"), [0.5, 0.2, 0.15, 0.15])
    if kind == "curved":
        shaft = _arc(0.5, 0.5, 0.45, 0.3, 200, -20)
        (ex, ey), (px, py) = shaft[-1], shaft[-2]
        dx, dy = ex - px, ey - py
        n = math.hypot(dx, dy)
        dx, dy = dx / n, dy / n
        return [shaft, [(ex - head * (dx - dy), ey - head * (dy + dx)), (ex, ey),
                        (ex - head * (dx + dy), ey - head * (dy - dx))]]
    tip = [(1 - head, 0.5 - spread), (1, 0.5), (1 - head, 0.5 + spread)]
    if kind == "fat":
        return [[(0, 0.43), (0.9, 0.43)], [(0, 0.57), (0.9, 0.57)], tip]
    strokes = [[(0, 0.5), (1, 0.5)], tip]
    if kind == "double":
        strokes.append([(head, 0.5 - spread), (0, 0.5), (head, 0.5 + spread)])
    return strokes


def _hand_ink(rng: np.random.Generator, strokes: list[Stroke], turn: float, steady: bool = False
              ) -> Ink:
    """Jittered pen strokes: each corner moved a little, a slow wobble along the line, slant,
    squash and a turn; pen width 4-13% of the size. ``steady``: no slant or turn (a slanted
    ">" reads as a 7)."""
    shear, sx = rng.uniform(-0.3, 0.3), rng.uniform(0.75, 1.2)
    if steady:
        shear, turn = 0.0, 0.0
    t = math.radians(turn)
    cos, sin = math.cos(t), math.sin(t)
    out = []
    for s in strokes:
        p = np.asarray(s, np.float64) + (rng.normal(0, 0.025, (len(s), 2)) if len(s) < 12 else 0)
        if len(p) > 1:  # densify, then wobble
            seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
            u = np.concatenate([[0], np.cumsum(seg)])
            dense = np.linspace(0, u[-1], max(2, int(u[-1] / 0.02)))
            p = np.stack([np.interp(dense, u, p[:, 0]), np.interp(dense, u, p[:, 1])], 1)
            for ax in range(2):
                a, fq, ph = rng.uniform(0.004, 0.015), rng.uniform(0.4, 1.5), rng.uniform(0, 6.3)
                p[:, ax] += a * np.sin(fq * dense * 2 * math.pi + ph)
        x = (p[:, 0] - 0.5 + shear * (0.5 - p[:, 1])) * sx
        y = p[:, 1] - 0.5
        out.append(np.stack([x * cos + y * sin, -x * sin + y * cos], 1))
    allp = np.concatenate(out)
    lo, span = allp.min(0), np.maximum(allp.max(0) - allp.min(0), 1e-3)
    width = rng.uniform(0.04, 0.13)

    def ink(h: int) -> np.ndarray:
        w = max(1.5, width * h)
        k = (h - w - 2) / span.max()
        H, W = (int(math.ceil(v * k + w + 2)) for v in (span[1], span[0]))

        def draw(d: ImageDraw.ImageDraw, ss: int) -> None:
            r = w * ss / 2
            for p in out:
                q = [((x - lo[0]) * k * ss + r + ss, (y - lo[1]) * k * ss + r + ss) for x, y in p]
                if len(q) == 1:  # a dot, a bit bolder than the line
                    (x, y), rr = q[0], r * 1.3
                    d.ellipse([x - rr, y - rr, x + rr, y + rr], fill=255)
                    continue
                d.line(q, fill=255, width=max(1, round(w * ss)))
                for x, y in q:  # round joins and caps (PIL's curve joints fray here)
                    d.ellipse([x - r, y - r, x + r, y + r], fill=255)
        return _layer(H, W, draw, ss=3)
    return ink


def find_fonts() -> list[str]:
    """The scoring families' TrueType and OpenType fonts installed on this machine (may be
    empty): ``realworld.SCORING_FONTS``, never the fonts renderer A trains with."""
    found: list[str] = []
    for root in ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"),
                 str(Path.home() / ".local/share/fonts")):
        for ext in ("ttf", "otf", "TTF", "OTF"):
            found += glob.glob(f"{root}/**/*.{ext}", recursive=True)
    return sorted(f for f in set(found) if scoring_font(f))


@lru_cache(maxsize=1)
def _font_table() -> tuple[tuple[str, frozenset[int]], ...]:
    """(path, code points) of the usable text fonts: those with Latin letters, not symbol or
    dingbat fonts (whose letters are other shapes)."""
    out = []
    try:
        from fontTools.ttLib import TTFont
    except ImportError:  # without fontTools: trust ASCII, no symbols
        TTFont = None
    for path in find_fonts():
        name = os.path.basename(path).lower()
        if any(s in name for s in ("symbol", "dingbat", "d050000l", "emoji", "math")):
            continue
        if TTFont is None:
            out.append((path, frozenset(range(32, 127))))
            continue
        try:
            cmap = frozenset(TTFont(path, lazy=True).getBestCmap() or ())
        except Exception:  # a broken font file is skipped
            continue
        if all(ord(ch) in cmap for ch in "AaBbEeMmWw"):
            out.append((path, cmap))
    return tuple(out)


def _font_ink(path: str, ch: str, turn: float) -> Ink:
    """A character from a font as a pen mask, longest side ``h``."""
    font = ImageFont.truetype(path, 160)
    x0, y0, x1, y1 = font.getbbox(ch)
    img = Image.new("L", (x1 - x0 + 8, y1 - y0 + 8), 0)
    ImageDraw.Draw(img).text((4 - x0, 4 - y0), ch, fill=255, font=font)
    if turn:
        img = img.rotate(turn, Image.Resampling.BICUBIC, expand=True)
    box = img.getbbox() or (0, 0, 1, 1)
    img = img.crop(box)

    def ink(h: int) -> np.ndarray:
        f = h / max(img.size)
        size = (max(1, round(img.width * f)), max(1, round(img.height * f)))
        return np.asarray(img.resize(size, Image.Resampling.LANCZOS), np.float32).clip(0, 255) / 255
    return ink


def _lookalike_ink(rng: np.random.Generator) -> tuple[Ink, str]:
    """What to draw and how: (pen-mask maker, name)."""
    kind = _pick(rng, ("upper", "lower", "sign", "shape", "symbol"), [0.3, 0.2, 0.22, 0.18, 0.1])
    fonts = _font_table()
    turn = rng.uniform(-10, 10) if rng.random() < 0.5 else 0.0
    if kind == "symbol":
        sym = FONT_SYMBOLS[int(rng.integers(len(FONT_SYMBOLS)))]
        having = [p for p, cmap in fonts if ord(sym) in cmap]
        if having:
            return _font_ink(_pick(rng, having), sym, turn), f"symbol {sym}"
        kind = "shape"
    if kind == "shape":
        name = _pick(rng, SHAPES, [0.12, 0.08, 0.12, 0.12, 0.12, 0.12, 0.32])
        if name == "arrow":
            return (_hand_ink(rng, _arrow(rng), rng.uniform(0, 360) if rng.random() < 0.5
                              else float(rng.integers(0, 8)) * 45 + rng.uniform(-8, 8)), "arrow")
        return _hand_ink(rng, HAND[name], turn), name
    pool = {"upper": UPPER + "Z", "lower": LOWER, "sign": SIGNS}[kind]
    ch = pool[int(rng.integers(len(pool)))]
    having = [p for p, cmap in fonts if ord(ch) in cmap]
    if having and (ch not in HAND or rng.random() < 0.5):
        return _font_ink(_pick(rng, having), ch, turn), f"font {ch}"
    if ch not in HAND:  # Z with no font: another capital
        ch = UPPER[int(rng.integers(len(UPPER)))]
    return _hand_ink(rng, HAND[ch], turn, steady=ch in "<>"), f"hand {ch}"


def _plain(rng: np.random.Generator, ink: Ink, pen: RGB) -> bytes:
    """On plain paper or a drawing pad."""
    H, W = (int(v) for v in rng.integers(120, 480, 2))
    m = ink(int(min(H, W) * rng.uniform(0.35, 0.8)))
    if rng.random() < 0.25:  # the drawing pad: black on white, clean PNG
        c = np.full((H, W, 3), 255, np.float32)
        paste(c, m, (W - m.shape[1]) // 2, (H - m.shape[0]) // 2, (0, 0, 0))
        return _encode(Image.fromarray(c.astype(np.uint8)), None)
    c = np.ones((H, W, 3), np.float32) * np.asarray(_pick(rng, PAPER_B), np.float32)
    x = int(rng.uniform(0.1, 0.9) * max(0, W - m.shape[1]))
    y = int(rng.uniform(0.1, 0.9) * max(0, H - m.shape[0]))
    paste(c, m, x, y, pen)
    return _finish(rng, c, 0.5)


def lookalike_named(rng: np.random.Generator) -> tuple[bytes, str]:
    """One non-digit image and what it shows ("font K", "hand e", "arrow", "symbol ★" ...)."""
    ink, name = _lookalike_ink(rng)
    scene = _pick(rng, ("plain", "form box", "graph paper", "ruled paper"),
                  [0.55, 0.15, 0.15, 0.15])
    render = {"plain": _plain, "form box": _form_cell, "graph paper": _graph,
              "ruled paper": _ruled}[scene]
    return render(rng, ink, _pen(rng)), f"{name} ({scene})"


def lookalike(rng: np.random.Generator) -> bytes:
    """One image of a letter, sign, arrow or shape: not a digit."""
    return lookalike_named(rng)[0]


# ---------------------------------------------------------------------------------------------
# Example images


def _sheet_of(images: list[bytes], cell: int = 150, cols: int = 6) -> Image.Image:
    """A contact sheet: each image fitted into a cell (tiny ones blown up with nearest)."""
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (cell + 6), rows * (cell + 6)), (255, 0, 255))
    for i, b in enumerate(images):
        im = Image.open(io.BytesIO(b)).convert("RGB")
        f = cell / max(im.size)
        size = (max(1, round(im.width * f)), max(1, round(im.height * f)))
        nearest = max(im.size) < 40
        im = im.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS)
        sheet.paste(im, ((i % cols) * (cell + 6) + 3, (i // cols) * (cell + 6) + 3))
    return sheet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write example renders of renderer B.")
    ap.add_argument("--out", default="/tmp/renderer_b_samples")
    ap.add_argument("--per", type=int, default=12, help="examples per set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from digitlab.data import load_dataset
    ds = load_dataset("mnist")
    x = ds.test_images.numpy()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    made: dict[str, list[bytes]] = {}
    for name, fn in SITUATIONS.items():
        made[name] = [fn(rng, x[i]) for i in rng.choice(len(x), args.per, replace=False)]
    named = [lookalike_named(rng) for _ in range(args.per * 2)]
    made["look-alike"] = [b for b, _ in named]
    made["number in boxes"] = [boxed_number(rng, [x[i] for i in rng.choice(
        len(x), int(rng.integers(2, 7)), replace=False)]) for _ in range(args.per)]
    for name, images in made.items():
        stem = name.replace(" ", "_")
        for old in out.glob(f"{stem}_[0-9]*.*"):  # an earlier run's, maybe of another format
            old.unlink()
        for i, b in enumerate(images):
            ext = "jpg" if b[:2] == b"\xff\xd8" else "png"
            (out / f"{stem}_{i:02d}.{ext}").write_bytes(b)
        _sheet_of(images).save(out / f"sheet_{stem}.png")
    (out / "look-alike.txt").write_text("".join(f"{i:02d} {n}\n" for i, (_, n) in enumerate(named)))
    print(f"{sum(map(len, made.values()))} images and {len(made)} sheets in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
