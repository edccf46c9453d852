"""Fitting into the MNIST field: crop, thicken hair-thin strokes, fit into 20x20 keeping the
aspect ratio (area interpolation), move by whole pixels so that the centre of mass lands on
pixel (14, 14), as MNIST did (training set mean 14.00, 14.01 in row/column coordinates)."""

from __future__ import annotations

import cv2
import numpy as np

from .ink import clip01
from .params import Params


def to_u8(x: np.ndarray) -> np.ndarray:
    """An image in [0, 1] -> uint8 (rounded half to even)."""
    if x.dtype == np.float32 and x.ndim == 2:
        # (one pass: the same float32 product, rounded as np.rint does; its absolute value
        # and saturation change nothing in [0, 1])
        return cv2.convertScaleAbs(x, alpha=255.0)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def fit(patch: np.ndarray, stroke: float, p: Params) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Soft ink patch (cropped to the digit) -> 28x28 float, fitted into the box and centred by
    centre of mass; hair-thin strokes (relative to the digit's size) are thickened first."""
    stages: dict[str, np.ndarray] = {}
    ph, pw = patch.shape
    s = p.box / max(ph, pw)
    if stroke * s < p.min_stroke and max(ph, pw) > p.box:
        r = int(np.ceil((p.min_stroke / s - stroke) / 2.0))
        patch = cv2.dilate(np.pad(patch, r), np.ones((2 * r + 1, 2 * r + 1), np.uint8))
        ph, pw = patch.shape
        s = p.box / max(ph, pw)
        stages["thickened"] = patch
    nw, nh = max(1, round(pw * s)), max(1, round(ph * s))
    box = cv2.resize(patch.astype(np.float32, copy=False), (nw, nh),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    clip01(box)
    stages["fitted"] = box
    total = float(box.sum())
    if total <= 0:
        return np.zeros((p.size, p.size), np.float32), stages
    # (not cv2.moments: it takes an N x 2 array, a digit 2 px wide, for a contour)
    cy = float(box.sum(axis=1) @ np.arange(nh, dtype=np.float32)) / total
    cx = float(box.sum(axis=0) @ np.arange(nw, dtype=np.float32)) / total
    c = p.size // 2
    top, left = int(round(c - cy)), int(round(c - cx))
    out = np.zeros((p.size, p.size), np.float32)
    ty0, tx0 = max(0, top), max(0, left)
    ty1, tx1 = min(p.size, top + nh), min(p.size, left + nw)
    if ty1 > ty0 and tx1 > tx0:
        out[ty0:ty1, tx0:tx1] = box[ty0 - top:ty1 - top, tx0 - left:tx1 - left]
    return out, stages
