"""A page turned a little askew: a row of cells or a ruled line whose long lines drift by
more than the line search's tolerance along their run.

The line search (``lines``) opens the ink map with long straight kernels along rows and
columns: a line across a wide strip that drifts a few px over its length is broken into
pieces, none long enough, and a row of cells turned by a degree or two comes out as one piece
of ink, the frame and the digits in it together. Its angle is read off the smallest rectangle
round the longest straight piece of ink (``cv2.minAreaRect``: the outline of a row of cells,
or a single line), and the ink map is turned back by it (``cv2.warpAffine``, on a canvas
large enough to keep every corner) before the lines are searched again.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import components as cc
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
        if a < p.skew_aspect * max(b, 1.0):
            continue
        filled = max(cv2.contourArea(outline), float(comps.area[i])) / max(a * b, 1.0)
        if filled < p.skew_fill:
            continue
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
