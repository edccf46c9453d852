"""Printed structure: form boxes, comb fields, ruled lines and grids found and taken out.

Printed lines are long, straight and thin: a morphological opening with a long line kernel on the
grey ink map keeps exactly the runs at least that long (a slight tilt is tolerated by first
thickening the ink across the line by a pixel each way; faint grids are found too). A candidate is
printed structure when it runs across most of the image (ruled paper, graph paper, the box of a
tight cell crop), when both its ends turn corners the same way (the sides of a box, rounded corners
included), or when both its ends meet such lines at T-junctions (the dividers of a row of cells;
two or more alike may stand open at one end). A digit's own bar (a 7's top, a 5's hat, a 2's base)
is none of these; a 4's bar turns a corner at one end and meets a T at the other. Only the line's
own fitted band is taken out, and removed pixels with stroke ink on both sides across it are put
back: a 7's stem keeps its crossing of a ruled line, a 4 its touch of the box. Ticks hanging off
removed lines (comb fields) and the arcs of rounded corners go with them (``remnants``). A line
written on, shorter than the page (an answer blank), is taken out under the writing it carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from . import components as cc
from .params import Params
from .window import Window


@dataclass
class _Seg:
    horizontal: bool
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int
    label: int = 0  # in its direction's run labels (set when they are labelled)
    start: tuple[int, int] = (0, 0)  # (x, y) of a pixel of its run
    thick: float = 0.0  # the line's own thickness (where no stroke lies along it), not its box's
    slope: float = 0.0  # centre line: across = slope * (along - start) + offset
    offset: float = 0.0
    level: float = 1.0  # the line's ink (a light grid line under a dark stroke is fainter)
    side: bool = False  # a side of a box (its ends turn corners), not a line across the page
    written: bool = False  # a line written on, shorter than the page (``_answer_lines``)

    @property
    def length(self) -> int:
        return self.x1 - self.x0 if self.horizontal else self.y1 - self.y0

    @property
    def box_thick(self) -> int:
        return self.y1 - self.y0 if self.horizontal else self.x1 - self.x0


def _quantile(v: np.ndarray, q: float) -> float:
    """An order statistic of a small array, by sorting (np.percentile costs ~30 us of overhead
    a call, and np.partition slows down on arrays of one repeated value, as a line's
    thickness profile is)."""
    return float(np.sort(v, axis=None)[int(q * (v.size - 1) + 0.5)])


def line_through(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """The least-squares line ``y = slope * x + offset`` through points (closed form;
    np.polyfit is ~10x slower); slope 0 when every x is the same."""
    xm, ym = float(xs.mean()), float(ys.mean())
    dx = xs - xm
    var = float(dx @ dx)
    slope = float(dx @ (ys - ym)) / var if var > 0 else 0.0
    return slope, ym - slope * xm


def _thin_columns(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Per position along a candidate (``m``: rows across it): its pixel count, whether it has
    any, the line's thickness (a low quantile of the counts: where no stroke lies along it) and
    the positions no thicker than that."""
    counts = np.count_nonzero(m, axis=0).astype(np.float32)
    has = counts > 0
    t = _quantile(counts[has], 0.25)
    return counts, has, t, has & (counts <= t + 1)


def _split(seg: _Seg, lab: np.ndarray) -> list[tuple[_Seg, np.ndarray]]:
    """A candidate as one or more lines: two parallel lines joined by a stroke lying between
    them (a 2's base between two grid lines) are one component but two lines. Returns
    (segment, its mask in the candidate's box with rows across the line) pairs."""
    m = lab[seg.y0:seg.y1, seg.x0:seg.x1] == seg.label
    if not seg.horizontal:
        m = m.T
    _, _, _, good = _thin_columns(m)
    if np.count_nonzero(good) < 2:
        return [(seg, m)]
    rows = np.count_nonzero(m[:, good], axis=1) >= 0.15 * np.count_nonzero(good)
    idx = np.nonzero(rows)[0]
    if len(idx) == 0:
        return [(seg, m)]
    breaks = np.nonzero(np.diff(idx) > 2)[0]
    if len(breaks) == 0:
        return [(seg, m)]
    out = []
    for a, b in zip(np.r_[0, breaks + 1], np.r_[breaks, len(idx) - 1]):
        lo, hi = max(0, idx[a] - 1), min(m.shape[0], idx[b] + 2)
        sub = np.zeros_like(m)
        sub[lo:hi] = m[lo:hi]
        part = _Seg(seg.horizontal, seg.x0, seg.y0, seg.x1, seg.y1, seg.label, side=seg.side,
                    written=seg.written)
        out.append((part, sub))
    return out


def _fit_line(seg: _Seg, m: np.ndarray, ink: np.ndarray) -> _Seg:
    """Thickness, centre line and ink level of a candidate (``m``: its mask in its box, rows
    across), robust to a stroke merging with part of it (a digit touching its box): per
    position along the line, the count and mean position of its pixels across; positions
    where a stroke thickens it are left out of the fit (a stroke may run along a box's side
    for most of its length, hence a low quantile for the thickness)."""
    v = ink[seg.y0:seg.y1, seg.x0:seg.x1]
    if not seg.horizontal:
        v = v.T
    counts, has, t, good = _thin_columns(m)
    if np.count_nonzero(good) < 2:
        good = has
    mg = m[:, good]
    xs = np.nonzero(good)[0].astype(np.float32)
    centre = np.arange(m.shape[0], dtype=np.float32) @ mg / counts[good]
    slope, offset = line_through(xs, centre)
    seg.thick, seg.slope, seg.offset = t, slope, offset
    seg.level = _quantile(v[:, good][mg], 0.9)  # its core, not its edges
    return seg


def _fitted(segs: list[_Seg], runs: _Runs, ink: np.ndarray) -> list[_Seg]:
    return [_fit_line(part, m, ink) for s in segs for part, m in _split(s, runs.labels)]


def _extend(seg: _Seg, on: np.ndarray) -> None:
    """Lengthen a fitted line along its centre line as far as faint ink continues there (``on``:
    0/1). A line drifting across its run, a page a degree askew, keeps in the straight-run
    search only what runs straight: its ends, where it meets a row's outer sides at the
    corners, would be left behind."""
    h, w = on.shape
    half = seg.thick / 2 + 1
    horizontal = seg.horizontal
    size = w if horizontal else h
    start, stop = (seg.x0, seg.x1) if horizontal else (seg.y0, seg.y1)
    base = seg.y0 if horizontal else seg.x0

    def inked(a: int) -> bool:
        c = base + seg.offset + seg.slope * (a - start)
        lo, hi = max(0, int(np.floor(c - half))), int(np.ceil(c + half)) + 1
        return bool((on[lo:hi, a] if horizontal else on[a, lo:hi]).any())

    a0 = start
    while a0 > 0 and inked(a0 - 1):
        a0 -= 1
    a1 = stop
    while a1 < size and inked(a1):
        a1 += 1
    seg.offset += seg.slope * (a0 - start)  # (the centre line is measured from the start)
    if horizontal:
        seg.x0, seg.x1 = a0, a1
    else:
        seg.y0, seg.y1 = a0, a1


def _band(seg: _Seg, shape: tuple[int, int], pad: float) -> tuple[slice, slice, np.ndarray]:
    """The pixels within ``pad`` px of the fitted line's own thickness, along its extent and
    half its thickness beyond each end (a pen's round cap): a window of the image and the
    mask within it."""
    h, w = shape
    half = seg.thick / 2 + pad
    cap = int(np.ceil(seg.thick / 2))
    if seg.horizontal:
        a0, a1 = max(0, seg.x0 - cap), min(w, seg.x1 + cap)
        along = np.arange(a0, a1, dtype=np.float32)
        centre = seg.y0 + seg.offset + seg.slope * (along - seg.x0)
        lo, hi = max(0, int(centre.min() - half) - 1), min(h, int(centre.max() + half) + 2)
        across = np.arange(lo, hi, dtype=np.float32)[:, None]
        return slice(lo, hi), slice(a0, a1), np.abs(across - centre[None, :]) <= half
    a0, a1 = max(0, seg.y0 - cap), min(h, seg.y1 + cap)
    along = np.arange(a0, a1, dtype=np.float32)
    centre = seg.x0 + seg.offset + seg.slope * (along - seg.y0)
    lo, hi = max(0, int(centre.min() - half) - 1), min(w, int(centre.max() + half) + 2)
    across = np.arange(lo, hi, dtype=np.float32)[None, :]
    return slice(a0, a1), slice(lo, hi), np.abs(across - centre[:, None]) <= half


@lru_cache(maxsize=256)
def _line_kernel(horizontal: bool, length: int) -> np.ndarray:
    return cc.frozen(np.ones((1, length) if horizontal else (length, 1), np.uint8))


@dataclass
class _Runs:
    """The straight runs found in one direction: their boxes (``segs``, in image pixels) and
    their 0/1 mask in the search window, labelled only when one of them is fitted (most
    digits have runs, and no printed line)."""

    horizontal: bool
    extent: int
    segs: list[_Seg]
    line: np.ndarray
    window: Window
    _labels: np.ndarray | None = field(default=None, repr=False)

    @property
    def labels(self) -> np.ndarray:
        """The runs' labels over the whole image."""
        if self._labels is None:
            _, lab = cv2.connectedComponents(self.line, connectivity=8, ltype=cv2.CV_32S)
            self._labels = self.window.paste(lab)
            for s in self.segs:
                s.label = int(self._labels[s.start[1], s.start[0]])
        return self._labels


def _loose(on: np.ndarray, horizontal: bool) -> np.ndarray:
    """The faint-ink mask thickened across the direction by a pixel each way (a slight tilt)."""
    return cv2.dilate(on, _line_kernel(not horizontal, 3))


def _candidates(on: np.ndarray, loose: np.ndarray, window: Window, horizontal: bool,
                length: int, extent: int = 0) -> _Runs:
    """Straight runs at least ``length`` px long. ``on``: the grey ink map above the faint
    level in ``window`` (0/1: a faint or JPEG-speckled ruled line is continuous there, though
    not in the hysteresis mask), ``loose``: ``_loose(on, horizontal)``. (Opening the
    thickened grey map and keeping its minimum with the map, then thresholding at the faint
    level, is the same: flat morphology and minima commute with a threshold; on 0/1 masks, one
    threshold serves every direction and length.)"""
    line = cv2.bitwise_and(cv2.morphologyEx(loose, cv2.MORPH_OPEN,
                                            _line_kernel(horizontal, length)), on)
    segs = []
    if cv2.countNonZero(line):  # (a digit alone often has no long straight run)
        # boxes from the outer contours (3-5x cheaper than connectedComponentsWithStats on
        # these small images); labels when a run is fitted
        contours, _ = cv2.findContours(line, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=window.origin)
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            segs.append(_Seg(horizontal, x, y, x + w, y + h, start=tuple(c[0, 0].tolist())))
    return _Runs(horizontal, extent, segs, line, window)


def _tick_thick(s: _Seg, runs: _Runs, p: Params) -> float:
    """A short run's thickness, as a tick it would be: its pixels over its length, where its
    box is at most ``tick_lean`` px thicker than that (a comb's short tick, 2 px with a soft
    pixel each side, has a 5 px box where it meets its line and measures about 4.3), else its
    box's. A run whose box is wider than that leans or bends: the top of a 0 runs straight
    for the opening's few pixels in a box twice its thickness, and a bold 7's hook leans, and
    neither is a printed tick."""
    if s.box_thick <= 2:  # (thin already, by its box: no count needed)
        return float(s.box_thick)
    x, y = runs.window.origin
    mean = cv2.countNonZero(runs.line[s.y0 - y:s.y1 - y, s.x0 - x:s.x1 - x]) / s.length
    return mean if s.box_thick <= mean + p.tick_lean else float(s.box_thick)


def _turns_at(s: _Seg, on: np.ndarray, tol: int, tick: int, end: int) -> bool:
    """Is there ink running off across ``s``, at least ``tick`` px, within ``tol`` of its
    start (``end`` 0) or its end (1)? ``on``: the 0/1 mask of faint ink."""
    if s.horizontal:
        x = s.x0 if end == 0 else s.x1 - 1
        y = (s.y0 + s.y1) // 2
        win = on[max(0, y - tick - tol):y + tick + tol + 1, max(0, x - tol):x + tol + 1]
        run = win.sum(axis=0)
    else:
        y = s.y0 if end == 0 else s.y1 - 1
        x = (s.x0 + s.x1) // 2
        win = on[max(0, y - tol):y + tol + 1, max(0, x - tick - tol):x + tick + tol + 1]
        run = win.sum(axis=1)
    return run.size > 0 and run.max() >= tick + s.box_thick


def _turns(s: _Seg, on: np.ndarray, tol: int, tick: int) -> bool:
    """Could ``s`` be a box's side: is there ink running off across it, at least ``tick`` px,
    within ``tol`` of both its ends? (A cheap look before searching for the corners.)"""
    return _turns_at(s, on, tol, tick, 0) and _turns_at(s, on, tol, tick, 1)


def _answer_lines(segs: list[_Seg], on: np.ndarray, tol: int, tick: int, p: Params
                  ) -> list[_Seg]:
    """The lines among ``segs`` that are written on, shorter than the page (an answer blank, a
    signature line): horizontal, nothing running off across them within ``tol`` of either
    end, under writing that stays within their length and falls short of one end by at least
    ``answer_beyond`` of it, reaches below by at most ``answer_below`` of its height above
    (strokes crossing the line), and printed finer than the pen wrote (at most
    ``answer_thin`` of the writing's stroke width). A digit's own bar is none of these: a 4's
    or a 7's bar has the stem below, a +'s bar as much ink below as above, a 2's base is as
    bold as the rest of the 2. (Writing: the rows and columns of ``on`` with two pixels or
    more, so that a speck of noise counts for nothing.)"""
    out: list[_Seg] = []
    segs = [s for s in segs if s.horizontal]
    if not segs:
        return out
    # (OpenCV's row and column sums: several times cheaper than numpy's on small images)
    rows = cv2.reduce(on, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    for s in segs:
        top = max(0, s.y0 - 1)
        above = np.flatnonzero(rows[:top] >= 2)
        if above.size == 0:
            continue
        height = s.y0 - int(above[0])
        deep = np.flatnonzero(rows[s.y1 + 1:] >= 2)
        if deep.size and deep[-1] + 1 > p.answer_below * height:
            continue
        cols = cv2.reduce(on[:top], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        if s.y1 + 1 < len(rows):
            cols = cols + cv2.reduce(on[s.y1 + 1:], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        xs = np.flatnonzero(cols >= 2)
        if xs.size == 0:
            continue
        x0, x1 = int(xs[0]), int(xs[-1]) + 1
        margin = max(2, int(p.answer_beyond * s.length))
        if (x0 < s.x0 or x1 > s.x1 or max(x0 - s.x0, s.x1 - x1) < margin
                or _turns_at(s, on, tol, tick, 0) or _turns_at(s, on, tol, tick, 1)):
            continue
        writing = on[int(above[0]):top, x0:x1].view(bool)
        if s.box_thick <= p.answer_thin * cc.stroke_width(writing):
            s.written = True
            out.append(s)
    return out


def _corner(a: _Seg, b: _Seg, tol: int) -> tuple[int, int]:
    """How perpendicular ``b`` meets ``a``'s start / end: 0 not at all, -1 or +1 a corner (b
    leaves a above or left / below or right), 2 a T (b runs on to both sides, as a comb's
    top line does past a divider, or a 4's stem past its bar)."""
    if a.horizontal:
        at, lo, hi, b_lo, b_hi = (a.y0 + a.y1) / 2, a.x0, a.x1 - 1, b.y0, b.y1
        near_lo = b.x0 - tol <= lo <= b.x1 + tol
        near_hi = b.x0 - tol <= hi <= b.x1 + tol
    else:
        at, lo, hi, b_lo, b_hi = (a.x0 + a.x1) / 2, a.y0, a.y1 - 1, b.x0, b.x1
        near_lo = b.y0 - tol <= lo <= b.y1 + tol
        near_hi = b.y0 - tol <= hi <= b.y1 + tol
    if not (b_lo - tol <= at <= b_hi + tol):
        return 0, 0
    # (b leaves a by more than half its length, or than tol: a comb's ticks are shorter than
    # the gap a rounded corner may leave)
    out = min(tol, 0.5 * (b_hi - b_lo))
    before, after = b_lo < at - out, b_hi > at + out
    side = 2 if before and after else (-1 if before else (1 if after else 0))
    return (side if near_lo else 0), (side if near_hi else 0)


def find_printed(ink: np.ndarray, mask: np.ndarray, pad: int, p: Params, turned: bool = False
                 ) -> tuple[np.ndarray, list[_Seg]]:
    """The printed lines in an ink map, as a bool mask (strokes crossing them excluded), and
    the lines; ``mask`` is the thresholded ink, ``pad`` the empty margin around a crop,
    ``turned``: the map was straightened (``skew``)."""
    h, w = mask.shape
    iw, ih = w - 2 * pad, h - 2 * pad  # the image's own extent
    thick_max = max(2, int(p.line_max_thick * min(ih, iw)))
    # corners may be rounded: a gap up to corner_tol of the image (at most a fifth of the
    # side); T-junctions are not, and a looser match there would take a 1 standing between two
    # ruled lines for a divider
    def tol(s: _Seg) -> int:
        return max(2, int(min(p.corner_tol * max(ih, iw), 0.2 * s.length)))
    tol_t = max(2, int(p.tee_tol * min(ih, iw)))
    # Straight runs first, judged by their boxes; only those taken for printed lines are fitted
    # (most digits have a long stroke or two: a 1's stem, a 7's bar, and no line at all).
    ink8 = cv2.convertScaleAbs(ink, alpha=255.0)
    # a tinted cell (or a shadow) is a broad faint plateau on the ink map, not a line: a white
    # top-hat limited to the tint (what a square wider than any line covers, where fainter than
    # the hysteresis's low level) takes it out, strokes and the lines under them whole, so the
    # lines round a tinted cell stand out and the tint never runs as a line (around strokes
    # thinner than the square, the opening's erosion leaves nothing: no plateau)
    wide = cc.square(2 * thick_max + 1)
    core = cv2.erode(ink8, wide)
    if cv2.countNonZero(core):
        _, plateau = cv2.threshold(cv2.dilate(core, wide), int(p.low * 255), 0,
                                   cv2.THRESH_TOZERO_INV)
        ink8 = cv2.subtract(ink8, plateau)
    _, on = cv2.threshold(ink8, int(p.line_faint * 255), 1, cv2.THRESH_BINARY)
    if not cv2.countNonZero(on):
        return np.zeros((h, w), bool), []
    window = Window.around(on)
    near = window.cut(on)
    loose = [_loose(near, True), _loose(near, False)]
    found = [_candidates(near, loose[k], window, horizontal,
                         max(8, int(p.line_min * extent)), extent)
             for k, (horizontal, extent) in enumerate(((True, iw), (False, ih)))]
    if not (found[0].segs or found[1].segs):
        return np.zeros((h, w), bool), []
    short: list[list[_Seg]] = [[], []]
    tick = max(5, int(p.tick_min * min(ih, iw)))
    if any(s.length < p.line_span * r.extent and _turns(s, on, tol(s), tick)
           for r in found for s in r.segs):
        for k, (horizontal, extent) in enumerate(((True, iw), (False, ih))):
            # (only the other direction's shorter candidates look for corners among them)
            if not any(s.length < p.line_span * found[1 - k].extent for s in found[1 - k].segs):
                continue
            # corners may be met by short straight pieces too (a comb field's ticks), longer
            # than the lines across them are wide (a bold or askew box's sides would pass the
            # opening too, and join the box into one ring)
            across = max((s.box_thick for s in found[1 - k].segs if s.box_thick <= 2 * thick_max),
                         default=0)
            runs = _candidates(near, loose[k], window, horizontal,
                               max(5, int(p.tick_min * extent), across + 1))
            short[k] = [s for s in runs.segs if s.length >= 3 * _tick_thick(s, runs, p)]

    # a frame's lines may be bolder than that in a small cell, when they come in pairs at
    # opposite edges (a stroke crossing a tiny crop has no twin)
    frame_max = max(thick_max, int(p.frame_max_thick * min(ih, iw)))
    edge_px = max(2, int(p.edge_margin * min(ih, iw)))

    def printed_thick(s: _Seg) -> float:
        # (a line drifting across its run, a page a little askew, keeps in the search's long
        # kernel only what runs straight of its thickness: it measures up to a pixel thinner
        # than the short lines printed like it; on a straightened map, the lines printed alike
        # measure up to a pixel apart, the turn's interpolation spreading each its own way)
        return s.thick + (1.0 if turned or abs(s.slope) * s.length >= p.drift_px else 0.0)

    # Pass 1: lines across the image, and sides of boxes (both ends turn a corner the same
    # way: a 4's bar meets its left stroke at a corner but its stem at a T). Pass 2: the
    # dividers of a row of cells, which meet pass 1's lines at T-junctions at both ends.
    printed: list[list[_Seg]] = [[], []]
    for k, runs in enumerate(found):
        horizontal, extent, segs = runs.horizontal, runs.extent, runs.segs
        across = [s for s in segs if s.length >= p.line_span * extent]
        sides = [s for s in segs if s.length < p.line_span * extent
                 and _ends(s, short[1 - k], tol(s)) in ((1, 1), (-1, -1))]
        for s in sides:
            s.side = True
        # a box cut by the image's edge: what is left of its side lies along that edge
        taken = {id(s) for s in across + sides}
        cut = [s for s in segs if id(s) not in taken and _hugs_edge(s, pad, ih, iw, edge_px)]
        # a line written on, shorter than the page
        taken |= {id(s) for s in cut}
        under = _answer_lines([s for s in segs if id(s) not in taken], on, tol_t, tick, p)
        lines = _fitted(across + sides + cut + under, runs, ink)
        if len(lines) >= 3:  # printed lines run parallel (a 7's stem from line to line: not)
            along = float(np.median([s.slope for s in lines]))
            lines = [s for s in lines if not _slanted(s, along, p)]
        for s in lines:
            if not s.side and s.length >= p.line_span * extent:
                _extend(s, on)
        bold = [s for s in lines if thick_max < s.thick <= frame_max]
        # a bold line across the image, many times longer than thick (a comb's baseline under
        # a short row of cells): no stroke of a digit is that long and straight
        ruler, framing = [], []
        for s in bold:
            long_ = s.length >= max(p.line_span * extent, p.line_bold * s.thick)
            (ruler if long_ else framing).append(s)
        printed[k] = [s for s in lines if s.thick <= thick_max] + ruler + _bold_frame(
            framing, lines, pad, ih if horizontal else iw, p.frame_edge, p.frame_twin)
    # a form's lines are printed with one pen: a side, then a lone line, far bolder than the
    # lines it is judged by is a stroke (a 9's stem by its box, a 4's across a tight cell)
    for sides in (True, False):
        printed = [[s for s in pr if s.side != sides or not _bold_stroke(
            s, pr, printed[1 - k], p, printed_thick)] for k, pr in enumerate(printed)]
    # where lines run across the image (a row of cells), boxes' sides are printed like them:
    # a bold 8's straight flanks turning its loops' corners inside a thinly printed cell are
    # strokes
    ruled = [s for r, pr in zip(found, printed) for s in pr
             if not s.side and s.length >= p.line_span * r.extent]
    if ruled:
        thin = max(printed_thick(s) for s in ruled) + 1
        printed = [[s for s in pr if not s.side or s.thick <= thin] for pr in printed]
        # ...and they turn a corner with a printed line at one end at least (a row's outer
        # sides meet the lines across it where those end): the straight flank of a boxy 0 on
        # a comb's baseline turns into its own arcs at both ends, and stands on the baseline
        # (a T), not at its end
        printed = [[s for s in pr if not s.side or any(
            e in (1, -1) for e in _ends(s, printed[1 - k], tol(s)))]
            for k, pr in enumerate(printed)]
    # A comb's dividers may stand open at one end (cells open at the top): two or more alike
    # (length within 15%, thickness within a pixel), each meeting a printed line at one end,
    # are printed too; a lone stroke standing on a line (a 1 on ruled paper) is not.
    for k, runs in enumerate(found):
        # (not a line written on: the strokes standing on it are the writing)
        frame = [f for f in printed[1 - k] if not f.written]
        if not frame:
            continue
        thin = max(printed_thick(f) for f in frame) + 1  # printed alike, not a pen stroke
        # (labels: set when pass 1 fitted the printed ones; none taken, none compared)
        taken = {s.label for s in printed[k]}
        rest = [s for s in runs.segs if s.label not in taken]
        ends = [_ends(s, frame, tol_t) for s in rest]
        # (meeting lines at both ends across a gap: a piece no longer than two lines are
        # thick may lie within one line's band, cut off where a digit in a cell's corner
        # touches both the divider and the line)
        chosen = [s for s, e in zip(rest, ends) if 0 not in e and s.length > 2 * thin]
        hanging = [s for s, e in zip(rest, ends) if (e[0] == 0) != (e[1] == 0)]
        # (beside dividers meeting lines at both ends, here or in pass 1, an open one is as long
        # as they are: a divider a digit broke, not 1s or a narrow 8's flanks near a line)
        like = chosen + printed[k]
        alike = [s for s in hanging if sum(_alike_segs(o, s) for o in hanging) >= 2
                 and (not like or any(_alike_segs(s, o) for o in like))]
        # (as thin as a line may be, or printed like a bold frame: a comb's broad baseline;
        # square to the lines, as printed: a slanted 7 touching both lines is not)
        bound = min(thin, max(thick_max, max(f.thick for f in frame) + 1), frame_max)
        square = -float(np.median([f.slope for f in frame]))
        printed[k] += [s for s in _fitted(chosen + alike, runs, ink) if s.thick <= bound
                       and not _slanted(s, square, p)]
    removed = np.zeros((h, w), bool)
    for k, runs in enumerate(found):
        horizontal = runs.horizontal
        if not printed[k]:
            continue
        # the lines' own bands (a stroke merging with a line keeps what lies beyond it)
        # and a stroke darker than a light line is kept where it runs along it
        line = np.zeros((h, w), bool)
        for s in printed[k]:
            rows, cols, band = _band(s, (h, w), 1.0)
            line[rows, cols] |= band & (ink[rows, cols] <= max(s.level * 1.5 + 0.15, 0.5))
        line &= ink > p.line_faint
        # put back the pixels with stroke ink on both sides, across the line
        rest = (mask & ~line).view(np.uint8)
        t = int(max(s.thick for s in printed[k])) + 3
        kernel = np.ones((2 * t + 1, 1) if horizontal else (1, 2 * t + 1), np.uint8)
        crossing = cv2.morphologyEx(rest, cv2.MORPH_CLOSE, kernel) > 0
        removed |= line & ~crossing
    return removed, printed[0] + printed[1]


def _bold_stroke(s: _Seg, same: list[_Seg], across: list[_Seg], p: Params,
                 thick: Callable[[_Seg], float]) -> bool:
    """Is ``s`` a pen's stroke: a side `side_bold` times bolder (plus a pixel) than every line
    across it, or a lone line that bold against all others (2+), twinless, and no ruler?"""
    others = across if s.side else [o for o in same if o is not s] + across
    return bool(others) and s.thick > p.side_bold * max(map(thick, others)) + 1 and (s.side or (
        len(others) >= 2 and s.length < p.line_bold * s.thick
        and all(abs(thick(o) - thick(s)) > 1 for o in same if o is not s)))


def _slanted(s: _Seg, slope: float, p: Params) -> bool:
    """Does ``s`` slant away from ``slope`` by ``line_slant`` or more, drifting
    ``skew_line_drift`` px or more along its length (printed lines are parallel or square)?"""
    off = abs(s.slope - slope)
    return off >= p.line_slant and off * s.length >= p.skew_line_drift


def _alike(length: float, thick: float, like_length: float, like_thick: float) -> bool:
    """Printed alike: as long as the other within 15% of its length, as thick within a pixel."""
    return abs(length - like_length) <= 0.15 * like_length and abs(thick - like_thick) <= 1


def _alike_segs(a: _Seg, b: _Seg) -> bool:
    return _alike(a.length, a.box_thick, b.length, b.box_thick)


def _hugs_edge(s: _Seg, pad: int, ih: int, iw: int, margin: int) -> bool:
    """Does ``s`` lie along one of the image's edges, within ``margin`` px of it?"""
    if s.horizontal:
        return s.y0 - pad <= margin or ih - (s.y1 - pad) <= margin
    return s.x0 - pad <= margin or iw - (s.x1 - pad) <= margin


def _bold_frame(bold: list[_Seg], lines: list[_Seg], pad: int, extent: int, edge: float,
                twin: float) -> list[_Seg]:
    """The ``bold`` lines that are a frame's sides: near an edge of the image (within ``edge``
    of its ``extent`` across them), with a twin among ``lines`` (bold or not, but at least
    1/``twin`` as thick) near the opposite edge, about as long."""
    def at(s: _Seg) -> float:
        return ((s.y0 + s.y1) / 2 if s.horizontal else (s.x0 + s.x1) / 2) - pad

    def side(s: _Seg) -> int:  # -1 near the first edge, 1 near the other, 0 neither
        return -1 if at(s) < edge * extent else (1 if at(s) > (1 - edge) * extent else 0)

    return [a for a in bold if side(a) and any(
        side(b) == -side(a) and abs(a.length - b.length) <= 0.3 * max(a.length, b.length)
        and b.thick * twin >= a.thick for b in lines)]


def _ends(s: _Seg, others: list[_Seg], tol: int) -> tuple[int, int]:
    """How the longest of ``others`` meeting each end of ``s`` meets it (see ``_corner``)."""
    start = end = (0, 0)  # (length, side)
    for o in others:
        a, b = _corner(s, o, tol)
        if a and o.length > start[0]:
            start = (o.length, a)
        if b and o.length > end[0]:
            end = (o.length, b)
    return start[1], end[1]
