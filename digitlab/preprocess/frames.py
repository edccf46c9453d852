"""Closed frames: a form box that the line search missed (turned askew, rounded, small), found
as a piece of ink whose outline is nearly a rectangle and whose pixels form a ring of even
width along it, with the writing inside.

The line search (``lines``) finds long straight runs along the image's rows and columns; a box
turned by more than a pixel per run length, one with corners rounded away to short sides, or one
in a small cell escapes it. Its outline does not: it fills its smallest enclosing rectangle at
any tilt (``cv2.minAreaRect``) but for the rounded corners, where a digit's outline fills far
less (an ellipse 79%). The frame's width is read off the distance to that outline (the ring of
pixels within ``t`` of it is solid ink, what lies further in is mostly paper), and only that
ring is taken out: a digit touching the box from inside keeps all but the pixels it shares
with it.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import components as cc
from .params import Params


def _ring_width(comp: np.ndarray, dist: np.ndarray, max_width: int, solid: float) -> int:
    """How many px in from the outline the piece is solid ink (at least ``solid`` of the pixels
    at each distance), up to ``max_width``; 0 when even the outermost pixels are not."""
    inside = dist > 0
    d = np.minimum(np.ceil(dist[inside]).astype(np.int64), max_width + 2)
    total = np.bincount(d, minlength=max_width + 3)
    ink = np.bincount(d[comp[inside]], minlength=max_width + 3)
    width = 0
    for k in range(1, max_width + 2):
        if total[k] == 0 or ink[k] < solid * total[k]:
            break
        width = k
    return width if width <= max_width else 0


def _straight(contour: np.ndarray, quad: np.ndarray, tol: float, share: float) -> bool:
    """Do at least ``share`` of the outline's points lie within ``tol`` px of the quadrilateral's
    sides (rounded corners stray, sides do not)?"""
    pts = contour[:, 0, :].astype(np.float32)
    corners = quad[:, 0, :].astype(np.float32)
    best = np.full(len(pts), np.inf, np.float32)
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        ab = b - a
        t = np.clip(((pts - a) @ ab) / max(float(ab @ ab), 1e-6), 0.0, 1.0)
        d = np.linalg.norm(pts - (a + t[:, None] * ab), axis=1)
        np.minimum(best, d, out=best)
    return float(np.mean(best <= tol)) >= share


def find_frames(comps: cc.Components, high: np.ndarray, pad: int, p: Params,
                narrow: bool = False) -> np.ndarray:
    """The pixels of closed frames among ``comps`` (the ink left after line removal) that hold
    writing: a bool mask, empty when there is none. ``high``: the strong ink (seeds), of
    which the writing inside must hold some; ``pad``: the crop margin. ``narrow``: instead,
    the frames narrower than that but ``frame_min`` of the image's short side each way (the
    boxes of a row written into one by one, looked for before the line search)."""
    h, w = comps.labels.shape
    ih, iw = h - 2 * pad, w - 2 * pad
    removed = np.zeros((h, w), bool)
    max_width = max(1, int(p.frame_max_thick * min(ih, iw)))
    widths, heights = comps.x1 - comps.x0, comps.y1 - comps.y0
    if narrow:
        least = p.frame_min * min(ih, iw)
        big = np.nonzero((widths < p.frame_min * iw) & (widths >= least)
                         & (heights >= least))[0]
    else:
        big = np.nonzero((widths >= p.frame_min * iw) & (heights >= p.frame_min * ih))[0]
    for i in big:
        x, y, x1, y1 = comps.box([i])
        bw, bh = x1 - x, y1 - y
        comp = comps.mask([i], (x, y, x1, y1))
        # (the corners of the outline first: the same hull, area and rectangle, ~5x cheaper)
        contours, _ = cv2.findContours(comp.view(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        corners = max(contours, key=cv2.contourArea)
        # the outline's smallest enclosing rectangle (any tilt): a frame fills it but for its
        # rounded corners, and its outline runs along the rectangle's sides
        rect = cv2.minAreaRect(corners)
        rw, rh = rect[1]
        if cv2.contourArea(corners) < p.frame_rect * rw * rh:
            continue
        outline = max(cv2.findContours(comp.view(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)[0], key=len)
        quad = cv2.boxPoints(rect).reshape(4, 1, 2)
        filled = np.zeros((bh, bw), np.uint8)
        cv2.drawContours(filled, [outline], -1, 1, cv2.FILLED)
        # (distance to the outside: a 1 px border of zeros round the piece's box)
        dist = cv2.distanceTransform(cv2.copyMakeBorder(filled, 1, 1, 1, 1, cv2.BORDER_CONSTANT,
                                                        value=0), cv2.DIST_L2, 3)[1:-1, 1:-1]
        width = _ring_width(comp, dist, max_width, p.frame_solid)
        if not width:
            continue
        ring = comp & (dist <= width + 0.5)
        inner = dist > width + 0.5
        # hollow: most of what the ring encloses is paper
        if np.count_nonzero(comp & inner) > p.frame_fill * max(1, np.count_nonzero(inner)):
            continue
        if not _straight(outline, quad, max(1.5, 0.03 * min(bw, bh)), p.frame_straight):
            continue
        # writing inside: strong ink in what the frame encloses, apart from the ring (another
        # piece, or a stroke touching the frame that reaches well in)
        inside = inner & ~comp | (comp & (dist > 2 * width + 2))
        if not (high[y:y1, x:x1] & (comps.labels[y:y1, x:x1] > 0) & inside).any():
            continue
        removed[y:y1, x:x1] |= ring
    return removed
