"""Remnants: the pieces of print left beside the lines ``lines.find_printed`` took out - short
straight ticks hanging off them (a comb field) and the arcs of a box's rounded corners."""

from __future__ import annotations

import cv2
import numpy as np

from . import components as cc
from .lines import _alike, _Seg
from .params import Params


def remove_remnants(mask: np.ndarray, removed: np.ndarray, lines: list[_Seg], p: Params
                    ) -> np.ndarray:
    """Pieces of print left beside removed lines: short straight ticks hanging off them (a comb
    field), printed like them (no thicker: a 1 written beside a grid line is a pen stroke), and
    small pieces at their ends (a box's rounded corners)."""
    # (what stands on a line written on is the writing, not a comb's ticks)
    lines = [s for s in lines if not s.written]
    if not removed.any() or not lines:
        return np.zeros_like(mask)
    n, lab, st = cc.with_stats(mask)
    if n <= 1:
        return np.zeros_like(mask)
    ys, xs = np.nonzero(removed)
    frame_h = int(ys.max() - ys.min() + 1)
    frame_w = int(xs.max() - xs.min() + 1)
    thick = max(s.thick for s in lines)
    # a box's rounded corner: the arc between the ends of two sides
    sides = [s for s in lines if s.side]
    reach = [max(3.0, min(p.corner_tol * max(mask.shape), 0.2 * s.length)) for s in sides]
    ends = [(x, y, r) for s, r in zip(sides, reach) for x, y in (
        ((s.x0, (s.y0 + s.y1) / 2), (s.x1, (s.y0 + s.y1) / 2)) if s.horizontal
        else (((s.x0 + s.x1) / 2, s.y0), ((s.x0 + s.x1) / 2, s.y1)))]
    near = cv2.dilate(removed.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    touching = np.unique(lab[near & mask])
    ids = touching[touching > 0]
    # straight, solid pieces, printed like the lines (no thicker): (upright, long, short side);
    # thin ones at least three times as long as wide. (A hairline a pixel off upright spans
    # two columns with one pixel a row: solid too.)
    solid = {}
    for i in ids:
        bw, bh, area = st[i, 2:5]
        long_, short = max(bw, bh), min(bw, bh)
        if (short * p.stub_aspect <= long_ and short <= thick + 2
                and (area >= 0.6 * long_ * short or (short <= 2 and area >= 0.9 * long_))):
            solid[int(i)] = (bool(bh >= bw), int(long_), int(short))
    thin = {i: v for i, v in solid.items() if 3 * v[2] <= v[1]}
    # ticks hanging off a lone line (a comb field's baseline), across it, are measured against
    # the image: there is no frame's height; two or more alike, printed the same (one stroke
    # of a 1 standing on a ruled line has no twin). Not off a box's sides: the arcs of a
    # printed 0 whose straight sides were taken for a box's are alike too (but a side alone
    # is a comb's baseline, its end ticks turning its corners); nor where lines both ways
    # give a frame's height to measure against (two 1s hanging from a row of cells' top).
    # Such ticks may be stubby (a comb printed with a broad pen), only solid and alike.
    across = {s.horizontal for s in lines if not s.side or len(lines) == 1}
    boxed = len({s.horizontal for s in lines}) == 2
    paired = set() if boxed else {
        i for i, (up, long_, short) in solid.items()
        if up in across and long_ <= p.tick_max * mask.shape[0 if up else 1]
        and sum(u == up and _alike(ln, sh, long_, short) for u, ln, sh in solid.values()) >= 2}
    drop = []
    for i in ids:
        x, y, bw, bh, area = st[i]
        long_ = max(bw, bh)
        tick = int(i) in paired or (
            int(i) in thin and long_ <= p.tick_max * (frame_h if bh >= bw else frame_w))
        # a corner's arc: small, thin, and all of it near the end of a box's side
        cx, cy = x + bw / 2, y + bh / 2
        corner = area <= 2 * (thick + 2) * long_ and any(
            long_ <= 1.5 * r and abs(cx - ex) <= r and abs(cy - ey) <= r for ex, ey, r in ends)
        if tick or corner:
            drop.append(i)
    if not drop:
        return np.zeros_like(mask)
    lut = np.zeros(n, bool)
    lut[drop] = True
    return lut[lab]
