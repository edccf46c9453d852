"""Printed structure: form boxes, comb fields, ruled lines and grids found and taken out.

Printed lines are long, straight and thin: a morphological opening with a long line kernel
keeps exactly the runs at least that long (a slight tilt is tolerated by first thickening the
mask across the line by a pixel each way). A candidate is printed structure when it runs
across most of the image (ruled paper, graph paper, the box of a tight cell crop), or when it
is a side of a rectangle (its two ends meet perpendicular candidates: a form box, the cells of
a comb field). A digit's own bar (a 7's top, a 5's hat, a 2's base) is neither. Removing a line
would cut the strokes that cross it, so removed pixels with ink on both sides of the line
(across it) are put back: a 7's stem keeps its crossing of a ruled line, a 4 its touch of the
box. Short ticks hanging off a removed line (comb fields) go with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .params import Params


@dataclass
class _Seg:
    horizontal: bool
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int
    label: int

    @property
    def length(self) -> int:
        return self.x1 - self.x0 if self.horizontal else self.y1 - self.y0

    @property
    def thick(self) -> int:
        return self.y1 - self.y0 if self.horizontal else self.x1 - self.x0


def _candidates(m: np.ndarray, horizontal: bool, length: int
                ) -> tuple[list[_Seg], np.ndarray, int]:
    across = (3, 1) if horizontal else (1, 3)
    along = (1, length) if horizontal else (length, 1)
    loose = cv2.dilate(m, np.ones(across, np.uint8))
    runs = cv2.morphologyEx(loose, cv2.MORPH_OPEN, np.ones(along, np.uint8)) & m
    n, lab, st, _ = cv2.connectedComponentsWithStats(runs, connectivity=8)
    segs = [_Seg(horizontal, int(x), int(y), int(x + w), int(y + h), i)
            for i, (x, y, w, h, _) in enumerate(st[1:], start=1)]
    return segs, lab, n


def _is_corner(a: _Seg, b: _Seg, tol: int) -> tuple[bool, bool]:
    """Whether ``b`` (perpendicular) forms a corner with ``a`` at a's start / a's end: b passes
    through a's end point and a lies at one of b's ends (or b crosses it there: a comb)."""
    if a.horizontal:
        y = (a.y0 + a.y1) / 2
        spans = b.y0 - tol <= y <= b.y1 + tol
        start = spans and b.x0 - tol <= a.x0 <= b.x1 + tol
        end = spans and b.x0 - tol <= a.x1 - 1 <= b.x1 + tol
    else:
        x = (a.x0 + a.x1) / 2
        spans = b.x0 - tol <= x <= b.x1 + tol
        start = spans and b.y0 - tol <= a.y0 <= b.y1 + tol
        end = spans and b.y0 - tol <= a.y1 - 1 <= b.y1 + tol
    return start, end


def find_printed(mask: np.ndarray, p: Params) -> np.ndarray:
    """The printed lines of a bool ink mask, as a bool mask (strokes crossing them excluded)."""
    h, w = mask.shape
    m = mask.view(np.uint8)
    thick_max = max(2, int(p.line_max_thick * min(h, w)))
    tol = max(2, int(p.corner_tol * max(h, w)))
    found = []
    for horizontal, extent in ((True, w), (False, h)):
        length = max(8, int(p.line_min * extent))
        segs, lab, n = _candidates(m, horizontal, length)
        segs = [s for s in segs if s.thick <= thick_max]
        found.append((horizontal, extent, segs, lab, n))
    hsegs, vsegs = found[0][2], found[1][2]
    removed = np.zeros((h, w), bool)
    for horizontal, extent, segs, lab, n in found:
        others = vsegs if horizontal else hsegs
        keep = []
        for s in segs:
            printed = s.length >= p.line_span * extent
            if not printed:
                start = end = False
                for o in others:
                    a, b = _is_corner(s, o, tol)
                    start, end = start or a, end or b
                printed = start and end
            if printed:
                keep.append(s.label)
        if keep:
            lut = np.zeros(n, bool)
            lut[keep] = True
            line = lut[lab]
            # put back the pixels with stroke ink on both sides, across the line
            rest = (mask & ~line).view(np.uint8)
            t = max(s.thick for s in segs if s.label in keep) + 2
            k = np.ones((2 * t + 1, 1) if horizontal else (1, 2 * t + 1), np.uint8)
            crossing = cv2.morphologyEx(rest, cv2.MORPH_CLOSE, k) > 0
            removed |= line & ~crossing
    return removed


def remove_ticks(mask: np.ndarray, removed: np.ndarray, p: Params) -> np.ndarray:
    """Short straight pieces left hanging off removed lines (the ticks of a comb field)."""
    if not removed.any():
        return np.zeros_like(mask)
    n, lab, st, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask)
    ys, xs = np.nonzero(removed)
    frame_h = int(ys.max() - ys.min() + 1)
    frame_w = int(xs.max() - xs.min() + 1)
    near = cv2.dilate(removed.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    touching = np.unique(lab[near & mask])
    ticks = []
    for i in touching[touching > 0]:
        x, y, bw, bh, area = st[i]
        long_, short = max(bw, bh), min(bw, bh)
        limit = p.tick_max * (frame_h if bh >= bw else frame_w)
        if long_ <= limit and short * 3 <= long_ and area >= 0.6 * long_ * short:
            ticks.append(i)
    if not ticks:
        return np.zeros_like(mask)
    lut = np.zeros(n, bool)
    lut[ticks] = True
    return lut[lab]
