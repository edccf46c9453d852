"""A page turned a little askew: a row of cells or a ruled line whose long lines drift by
more than the line search's tolerance along their run.

The line search (``lines``) opens the ink map with long straight kernels along rows and
columns: a line across a wide strip that drifts a few px over its length is broken into
pieces, none long enough, and a row of cells turned by a degree or two comes out as one piece
of ink, the frame and the digits in it together. Its angle is read off the smallest rectangle
round the longest straight piece of ink (``cv2.minAreaRect``: the outline of a row of cells,
or a single line), and the ink map is turned back by it (``cv2.warpAffine``, on a canvas
large enough to keep every corner) before the lines are searched again. A comb field or a row
of cells open at the top has no filled outline (its dividers stand on the baseline): there
the angle is that of the longest straight line in the piece (``cv2.HoughLinesP``, refined on
the centre of the line's band).
"""

from __future__ import annotations

import cv2
import numpy as np

from . import components as cc
from .lines import line_through
from .params import Params


def skew_angle(comps: cc.Components, shape: tuple[int, int], p: Params) -> float:
    """The tilt, in degrees (counter-clockwise as seen), of the longest straight piece of ink
    that runs along the image: at least ``skew_span`` of its width, ``skew_aspect`` times as
    long as its rectangle is deep, filling ``skew_fill`` of that rectangle (its outline, or
    its pixels for a thin line). 0.0 when there is none, or when it lies within
    ``skew_min_deg`` of level (the line search copes) or beyond ``skew_max_deg`` (writing,
    not a page turned askew)."""
    h, w = shape
    widths = comps.x1 - comps.x0
    # (a cheap look before the outline: a rectangle skew_aspect times as long as deep, turned
    # by up to skew_max_deg, has a box at least this many times as wide as tall)
    t, r = np.radians(p.skew_max_deg), p.skew_aspect
    box_aspect = 0.9 * (r * np.cos(t) + np.sin(t)) / (r * np.sin(t) + np.cos(t))
    for i in np.argsort(-widths, kind="stable"):
        if widths[i] < p.skew_span * w:
            break
        if comps.strong[i] == 0 or widths[i] < box_aspect * (comps.y1[i] - comps.y0[i]):
            continue
        box = comps.box([int(i)])
        piece = np.ascontiguousarray(comps.mask([int(i)], box), dtype=np.uint8)
        contours, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outline = max(contours, key=len)
        _, (a, b), angle = cv2.minAreaRect(outline)
        # (OpenCV gives the angle of the side measured as ``a``: along it, or across it)
        if a < b:
            a, b, angle = b, a, angle - 90.0
        angle = (angle + 90.0) % 180.0 - 90.0  # the long side's direction, in (-90, 90]
        filled = max(cv2.contourArea(outline), float(comps.area[i])) / max(a * b, 1.0)
        if a < p.skew_aspect * max(b, 1.0) or filled < p.skew_fill:
            # no straight outline: a comb's baseline, or cells open at the top, with their
            # dividers standing on it; the longest straight line in the piece, if any
            found = _longest_line(piece, int(p.skew_span * w))
            if found is None:
                continue
            angle, length = found
            # (a line drifting by less along its run is left to the line search, which copes:
            # a turn blurs thin lines)
            if abs(np.tan(np.radians(angle))) * length < p.skew_line_drift:
                return 0.0
        # minAreaRect's y axis points down: a line rising to the right has a negative angle
        if p.skew_min_deg <= abs(angle) <= p.skew_max_deg:
            return -angle
        return 0.0  # the longest straight piece lies level (or is no page line)
    return 0.0


def straighten(ink: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``ink`` (0 = paper) turned by ``-angle`` degrees on a canvas holding all of it, and the
    2x3 affine map from the straightened image's pixels back to ``ink``'s."""
    h, w = ink.shape
    turn = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), -angle, 1.0)
    c, s = abs(turn[0, 0]), abs(turn[0, 1])
    nw, nh = int(np.ceil(w * c + h * s)), int(np.ceil(h * c + w * s))
    turn[0, 2] += (nw - w) / 2.0
    turn[1, 2] += (nh - h) / 2.0
    out = cv2.warpAffine(ink, turn, (nw, nh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, cv2.invertAffineTransform(turn)


def _longest_line(piece: np.ndarray, min_len: int) -> tuple[float, float] | None:
    """The angle (degrees, OpenCV's y axis down) and length of the longest straight line
    running along a 0/1 ``piece``, at least ``min_len`` px long; None when there is none.
    The line is found by ``cv2.HoughLinesP`` (bridging gaps up to a twentieth of
    ``min_len``: a faint line breaks up in the mask). Its segment may run corner to corner
    across a bold line's band, so the angle is that of the band's centre: per column along
    the segment, the middle of the run of ink through it, where the run is no longer than
    the line is thick (a divider or a stroke standing on it lengthens it there), fitted by
    least squares."""
    found = cv2.HoughLinesP(piece, 1, np.pi / 720, threshold=min_len // 2,
                            minLineLength=min_len, maxLineGap=max(3, min_len // 20))
    if found is None:
        return None
    x0, y0, x1, y1 = max(found.reshape(-1, 4).tolist(),
                         key=lambda s: (s[2] - s[0]) ** 2 + (s[3] - s[1]) ** 2)
    if x1 < x0:
        x0, y0, x1, y1 = x1, y1, x0, y0
    if x1 - x0 < abs(y1 - y0):  # (steeper than 45 degrees: no line along the piece)
        return None
    h = piece.shape[0]
    reach = max(4, int(0.15 * h))
    xs = np.arange(x0, x1 + 1)
    ys = np.rint(y0 + (xs - x0) * ((y1 - y0) / max(x1 - x0, 1))).astype(np.int64)
    rows = ys[:, None] + np.arange(-reach, reach + 1)[None, :]
    near = np.where((rows >= 0) & (rows < h), piece[np.clip(rows, 0, h - 1), xs[:, None]] > 0,
                    False).astype(np.int64)
    # per column, the run of ink through the segment: how far it reaches up and down
    up = np.cumprod(near[:, reach::-1], axis=1).sum(axis=1)
    down = np.cumprod(near[:, reach:], axis=1).sum(axis=1)
    has = up > 0
    if np.count_nonzero(has) < 2:
        return None
    run = (up + down - 1)[has]
    thin = run <= np.sort(run)[int(0.25 * (run.size - 1))] + 1
    if np.count_nonzero(thin) < 2:  # (one column: no slope)
        return None
    centre = (ys[has] + (down[has] - up[has]) / 2.0)[thin]
    slope, _ = line_through(xs[has][thin].astype(np.float64), centre)
    return float(np.degrees(np.arctan(slope))), float(np.hypot(x1 - x0, y1 - y0))
