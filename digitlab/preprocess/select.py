"""Finding the digit among the ink pieces, and the reasons an image holds none.

The digit is the main blob (pieces touching the border count for less) plus the pieces near
it, with specks ignored; a fine pen's broken strokes and dashes join it. Blank, noisy or
shapeless inputs (solid blobs, grids, scribbles, ink running off the page, several digits side
by side) get a reason instead of a digit.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import components as cc
from .components import Components
from .params import PARAMS, Params


def keep_pieces(c: Components, h: int, w: int, only_specks: str = "blank: only specks"
                ) -> tuple[np.ndarray, str | None]:
    """The components that are not specks (some component has strong pixels), and why there is
    no digit among them (or None); ``only_specks`` is the reason when nothing else is left."""
    has_strong = c.strong > 0
    if not has_strong.any():
        return np.zeros(0, np.int64), only_specks
    low_area = int(c.area[has_strong].sum())
    biggest = int(c.area[has_strong].max())
    # A speck is small both in absolute terms (a few working px) and next to the main stroke.
    speck = max(3, int(0.02 * biggest), int(2e-4 * h * w))
    keep = np.nonzero(has_strong & (c.area >= speck))[0]
    if len(keep) > 25 and biggest < 0.5 * low_area:
        return keep, f"noise: {int(has_strong.sum())} scattered specks and no main stroke"
    if len(keep) == 0:
        return keep, only_specks
    return keep, None


def touches_border(c: Components, i, h: int, w: int):
    """Does component ``i`` touch the image's border (elementwise for an array of ids)?"""
    return (c.x0[i] == 0) | (c.y0[i] == 0) | (c.x1[i] == w) | (c.y1[i] == h)


def select_digit(c: Components, keep: np.ndarray, shape: tuple[int, int], p: Params
                 ) -> list[int]:
    """The main blob and the pieces that belong to it (near it, not specks)."""
    h, w = shape
    if len(keep) == 1:  # (most images: one piece, nothing to join)
        return [int(keep[0])]
    # Clutter along the edges (a table beyond the paper, a shadow) counts for less.
    score = c.area[keep] * np.where(touches_border(c, keep, h, w), 0.3, 1.0)
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
            big = min(1.0, c.area[i] / (p.big_piece * c.area[main]))
            reach = size * (p.piece_reach + (p.big_piece_reach - p.piece_reach) * big)
            if (c.x0[i] < bx1 + reach and c.x1[i] > bx0 - reach
                    and c.y0[i] < by1 + reach and c.y1[i] > by0 - reach):
                group.append(int(i))
                bx0, by0 = min(bx0, c.x0[i]), min(by0, c.y0[i])
                bx1, by1 = max(bx1, c.x1[i]), max(by1, c.y1[i])
                changed = True
    small = [int(i) for i in keep if i not in group and c.area[i] < piece_min]
    gap = p.dash_gap * max(bx1 - bx0, by1 - by0)
    if small and gap >= 3:  # (bridging 1-2 px in a small image would join noise texture)
        group += _dashes(c, group, small, gap)
    return group


def _dashes(c: Components, group: list[int], small: list[int], gap: float) -> list[int]:
    """The small pieces chained to the digit by gaps of at most ``gap`` px: the dashes of a fine
    pen whose ink skipped along the stroke (the stem of a 9 in five short pieces)."""
    r = max(1, int(np.ceil(gap / 2)))  # grow every piece by gap/2: gaps up to gap close
    ids = group + small
    box = c.box(ids)
    b = cc.bridged(c.mask(ids, box), r)[r:-r, r:-r]
    lab = c.labels[box[1]:box[3], box[0]:box[2]]
    inside = b > 0
    pairs = np.unique(np.stack([lab[inside], b[inside]]), axis=1)  # (component label, bridged)
    mine = set(pairs[1][np.isin(pairs[0], np.asarray(group) + 1)].tolist())
    joined = set(pairs[0][np.isin(pairs[1], list(mine))].tolist())
    return [i for i in small if i + 1 in joined]


def bridged_pieces(sel: np.ndarray, n: int) -> int:
    """The ``n`` pieces of ink once gaps up to ~6% of the mark's size are bridged: a fine pen's
    dashed stroke (pressure dropping again and again along a 3 or an 8) is one piece, specks
    strewn over the page stay many. Small marks are not bridged (1-2 px joins noise texture)."""
    r = round(0.03 * max(sel.shape))
    return int(cc.bridged(sel, r).max()) if r >= 2 else n


def group_columns(c: Components, ids) -> list[list[int]]:
    """Pieces that overlap horizontally are one digit (the hat of a 5, an open 4); digits side by
    side are separated by gaps. Returns groups left to right."""
    order = sorted((int(i) for i in ids), key=lambda i: (c.x0[i], c.x1[i]))
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


def number_marks(c: Components, groups: list[list[int]], ink: np.ndarray, p: Params
                 ) -> list[list[int]]:
    """The groups of a row that are digits: as tall as ``mark_tall`` of the tallest; if
    shorter than ``speck_tall`` of it, more than ``speck_area`` of the groups' median area (a
    speck, a comma, half a broken 1 that the other half reads for); and as dark as
    ``faint_mark`` of the others at their darkest (the 90th percentile of the ink map: a stray
    pencil mark, what is left of a box printed in a light tone)."""
    if len(groups) < 2:
        return groups
    # (each group's selection: made once, and the one the digit is later cut out with)
    sels = [c.selection(g) for g in groups]
    heights = [sel.box[3] - sel.box[1] for sel in sels]
    areas = [int(c.area[g].sum()) for g in groups]
    tallest, median_area = max(heights), float(np.median(areas))
    keep = [(g, sel) for g, sel, gh, ga in zip(groups, sels, heights, areas)
            if gh >= p.mark_tall * tallest
            and (gh >= p.speck_tall * tallest or ga > p.speck_area * median_area)]
    if len(keep) < 2:
        return [g for g, _ in keep]

    def darkest(sel) -> float:
        x0, y0, x1, y1 = sel.box
        return float(np.percentile(ink[y0:y1, x0:x1][sel.mask], 90))
    dark = [darkest(sel) for _, sel in keep]
    top = float(np.median(dark))
    return [g for (g, _), d in zip(keep, dark) if d >= p.faint_mark * top]


RUNS_OFF = "the ink runs off the edge of the image"
DOTTED_MARK = "a mark with a dot under its end (? or !), not a digit"


def without_edge_slivers(c: Components, group: list[int], shape: tuple[int, int], p: Params
                         ) -> list[int]:
    """``group`` without the pieces lying in a thin band along the image's edge (within
    ``edge_sliver`` of its short side), when only they made it reach the edge: what is left
    of a box's side along the edge of a cell cut out askew joins a digit written near it, and
    the digit looked cut off."""
    h, w = shape
    band = p.edge_sliver * min(h, w)

    def sliver(i: int) -> bool:
        return bool(((c.y0[i] == 0 or c.y1[i] == h) and c.y1[i] - c.y0[i] <= band)
                    or ((c.x0[i] == 0 or c.x1[i] == w) and c.x1[i] - c.x0[i] <= band))

    rest = [i for i in group if not sliver(i)]
    if not rest or rest[0] != group[0] or len(rest) == len(group):
        return group
    return group if any(touches_border(c, rest, h, w)) else rest


def shape_reason(c: Components, group: list[int], shape: tuple[int, int], crop: bool,
                 number_mode: bool = False, ink: np.ndarray | None = None,
                 p: Params = PARAMS) -> str | None:
    """Why the selected ink is not a digit, or None. Thresholds from MNIST digits re-rendered in
    every benchmark style (1st/99th percentiles) against generated shapes, grids and
    scribbles: see docs/predict.md. ``ink``: the ink map the components were thresholded from
    (a blurred bold digit's loops, filled at the threshold, still show lighter in it)."""
    h, w = shape
    digit = c.selection(group)
    x0, y0, x1, y1 = digit.box
    bw, bh = x1 - x0, y1 - y0
    area = int(c.area[group].sum())
    if max(bw, bh) < max(4, 0.03 * max(h, w)) or area < 8:
        return "only a speck of ink"
    if not number_mode and bw > 1.2 * bh and len(group) > 1:
        cols = group_columns(c, group)
        if sum(int(max(c.y1[g]) - min(c.y0[g])) >= 0.5 * bh for g in cols) >= 2:
            return "several digits side by side (use number mode: --number)"
    if bw > 4 * bh:
        return "a horizontal line, not a digit"
    sel = digit.mask
    if len(group) > 6 and bridged_pieces(sel, len(group)) > 6:
        return "scattered fragments"
    if (not number_mode and not crop and any(touches_border(c, i, h, w) for i in group)
            and bw < 0.7 * w and bh < 0.7 * h):
        # not a tight crop, yet the ink runs into the edge: a cut-off mark or a scribble
        return RUNS_OFF
    fill = area / float(bw * bh)
    stroke = digit.stroke_width / max(bw, bh)
    any_holes = len(digit.hole_sizes)
    loop_min = max(2, int(0.002 * bw * bh))  # px: a loop, not a pinhole
    # Bold 6s and 8s are as thick as blobs but keep (small) loops; a filled shape has none,
    # not even lighter than the strokes round them (a blurred bold 8's, filled at the threshold)
    # (in a crop, an upright bar is a 1 filling its cell)
    if any_holes <= 0 and (fill > 0.6 and stroke > 0.35 or fill > 0.9 and stroke > 0.28) and (
            not crop or bh < p.upright * bw) and (
            ink is None or not _faint_loops(sel, ink[y0:y1, x0:x1], loop_min, crop, p)):
        return "a solid blob, not a pen stroke"
    if not number_mode and dotted_stroke(c, group, digit.stroke_width):
        return "a stroke and a dot (! or i), not a digit"
    if any_holes >= 5 and stroke < 0.11:  # digits: <= 2 loops at this stroke width
        # count again after closing pinholes (dithered scans, noisy strokes are full of them)
        loops = cc.holes(cc.close3(sel))
        if loops >= 5:
            return f"a scribble ({loops} crossings and loops)"
    # (in a crop - a cell or a thumbnail, often enlarged - pixel noise leaves pinholes in a
    # stroke, which are not loops: they are closed first)
    loops = (cc.holes(cc.close3(sel), loop_min) if crop
             else sum(1 for size in digit.hole_sizes if size >= loop_min))
    if loops >= 5:  # an 8 has two loops (a hasty one 3 or 4); grids and hatching have many
        return f"{loops} enclosed loops (a grid or scribble)"
    return None


def _faint_loops(sel: np.ndarray, ink: np.ndarray, loop_min: int, crop: bool, p: Params
                 ) -> bool:
    """Does a blob keep loops lighter than its strokes: where the ink is under ``solid_core``
    of the stroke's, or, in a crop (often a cell of a few px enlarged, whose loops are a pixel
    or two, washed out), where it dips ``loop_dip`` under its neighbourhood's mean?"""
    if cc.holes(sel & (ink > p.solid_core), loop_min):
        return True
    if not crop:
        return False
    k = max(3, max(sel.shape) // 4) | 1
    local = cv2.blur(ink, (k, k), borderType=cv2.BORDER_CONSTANT)
    return bool(cc.holes(sel & (ink > local - p.loop_dip), loop_min))


def dotted_stroke(c: Components, group: list[int], stroke: float) -> bool:
    """A straight upright stroke with a round dot just beyond one end, in line with it: an
    exclamation mark or an i, which no digit is. ``stroke``: the pen's width (px). A 1 broken
    by a skipping pen leaves a stroke's piece, longer than wide, hardly apart from the rest."""
    if len(group) != 2:
        return False
    a, b = sorted(group, key=lambda i: -int(c.area[i]))
    mw, mh = int(c.x1[a] - c.x0[a]), int(c.y1[a] - c.y0[a])
    dw, dh = int(c.x1[b] - c.x0[b]), int(c.y1[b] - c.y0[b])
    if mh < 1.5 * mw or not 0.5 * dh <= dw <= 2.0 * dh or max(dw, dh) > 0.5 * mh:
        return False
    if c.area[b] < 0.5 * dw * dh:  # filled: a dot, not a ring or a hook
        return False
    gap = max(int(c.y0[b] - c.y1[a]), int(c.y0[a] - c.y1[b]))  # below the stroke or above it
    # (a piece a skipping pen leaves is longer than wide, along the stroke: it must stand
    # half a pen's width apart; a dot no taller than wide may sit a pixel from the stroke)
    if not (1.0 if dh <= dw else max(1.0, 0.5 * stroke)) <= gap <= 0.5 * mh:
        return False
    centre = 0.5 * (c.x0[b] + c.x1[b])
    return bool(c.x0[a] - dw <= centre <= c.x1[a] + dw)


def dot_below(c: Components, keep: np.ndarray, group: list[int], stroke: float,
              printed: np.ndarray | None = None) -> bool:
    """A mark whose lowest part is one stroke's end, with a round filled dot of about the pen's
    width just below that end: a question mark (its hook is no upright stroke, which
    ``dotted_stroke`` asks for), or an exclamation mark whose dot lies too far off to join the
    mark's pieces. The dot is the smallest piece of the mark or a piece left out of it.
    ``stroke``: the pen's width (px). A full stop after a digit sits beside its foot, not
    under it; a stroke's end that a skipping pen broke off is taller than wide or lies closer
    than the pen is wide, and one that a removed printed line cut off has that line's print
    (``printed``, the mask of what was removed) between it and the rest."""
    pairs = [(int(i), group) for i in keep if i not in group]
    if len(group) >= 2:
        dot = min(group, key=lambda i: int(c.area[i]))
        pairs.append((int(dot), [i for i in group if i != dot]))
    for dot, mark in pairs:
        x0, y0, x1, y1 = c.box(mark)
        mh = y1 - y0
        dw, dh = int(c.x1[dot] - c.x0[dot]), int(c.y1[dot] - c.y0[dot])
        gap = int(c.y0[dot]) - y1
        # (round: no taller than wide but for a pixel; a piece of a stroke running down is)
        if (not dh - 1 <= dw <= 2.0 * dh or c.area[dot] < 0.5 * dw * dh
                or not 0.6 * stroke <= max(dw, dh) <= min(2.5 * stroke, 0.4 * mh)
                or not max(1.0, 0.8 * stroke) <= gap <= 0.6 * mh
                or c.area[dot] > 0.25 * c.area[mark].sum()):
            continue
        foot = max(y0, y1 - max(2, int(round(stroke))))  # its lowest rows: one stroke's end?
        cols = np.nonzero(c.mask(mark, (x0, foot, x1, y1)).any(axis=0))[0]
        if not len(cols) or cols[-1] - cols[0] + 1 > 2.5 * stroke:
            continue
        centre = 0.5 * (c.x0[dot] + c.x1[dot]) - x0
        if not cols[0] - dw <= centre <= cols[-1] + 1 + dw:
            continue
        left, right = min(x0 + int(cols[0]), int(c.x0[dot])), max(x0 + int(cols[-1]) + 1,
                                                                  int(c.x1[dot]))
        if printed is None or not printed[foot:int(c.y1[dot]), left:right].any():
            return True
    return False


def neighbour_reason(c: Components, keep: np.ndarray, group: list[int]) -> str | None:
    """Another digit-sized blob beside the digit, on the same line: a number, not a digit."""
    x0, y0, x1, y1 = c.selection(group).box
    gh = y1 - y0
    for i in keep:
        if i in group or c.y1[i] - c.y0[i] < 0.6 * gh:
            continue
        overlap = min(y1, c.y1[i]) - max(y0, c.y0[i])
        gap = max(c.x0[i] - x1, x0 - c.x1[i])
        if overlap > 0.5 * gh and gap < 2 * gh:
            return "several digits side by side (use number mode: --number)"
    return None
