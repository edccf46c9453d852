"""Ink pieces: 8-connected components with their boxes, areas and strong pixels (OpenCV), and
the shape measures the later stages ask of a set of them (holes, stroke width, bridging)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import cv2
import numpy as np

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def frozen(a: np.ndarray) -> np.ndarray:
    """``a``, read-only: for arrays cached and shared by every call (and by threads)."""
    a.flags.writeable = False
    return a


@lru_cache(maxsize=64)
def square(size: int) -> np.ndarray:
    """A ``size`` x ``size`` square structuring element (cached, read-only)."""
    return frozen(np.ones((size, size), np.uint8))


_SQUARE = square(3)


@dataclass
class Components:
    """Component ``i`` is label ``i + 1`` of ``labels``; boxes are [x0, x1) x [y0, y1)."""

    labels: np.ndarray  # int32 (H, W), 0 = background
    area: np.ndarray
    strong: np.ndarray  # pixels above the high threshold
    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    _selections: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.area)

    def mask(self, ids, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Boolean mask of the components ``ids``, over the whole image or a box (x0, y0, x1, y1)."""
        lab = self.labels if box is None else self.labels[box[1]:box[3], box[0]:box[2]]
        if len(ids) == 1:  # (one piece, most often: a comparison, not a table look-up)
            return lab == int(ids[0]) + 1
        lut = np.zeros(self.n + 1, bool)
        lut[np.asarray(ids, dtype=np.int64) + 1] = True
        return lut[lab]

    def box(self, ids) -> tuple[int, int, int, int]:
        if len(ids) == 1:
            i = int(ids[0])
            return int(self.x0[i]), int(self.y0[i]), int(self.x1[i]), int(self.y1[i])
        ids = np.asarray(ids, dtype=np.int64)
        return (int(self.x0[ids].min()), int(self.y0[ids].min()),
                int(self.x1[ids].max()), int(self.y1[ids].max()))

    def selection(self, ids) -> Selection:
        """The components ``ids`` taken together, made once per set: selection, the shape
        checks and fitting all ask for the same digit's box, mask and measures."""
        key = tuple(int(i) for i in ids)
        sel = self._selections.get(key)
        if sel is None:
            box = self.box(key)
            sel = self._selections[key] = Selection(box, frozen(self.mask(key, box)))
        return sel


@dataclass
class Selection:
    """Components taken together (a digit): their box (x0, y0, x1, y1), their mask within it
    (read-only), and the measures of it that more than one stage asks for."""

    box: tuple[int, int, int, int]
    mask: np.ndarray

    @cached_property
    def stroke_width(self) -> float:
        return stroke_width(self.mask)

    @cached_property
    def hole_sizes(self) -> list[float]:
        return hole_sizes(self.mask)


def with_stats(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected labels of a bool or 0/1 uint8 mask, and each label's x, y, width, height,
    area (OpenCV's statistics). OpenCV's default algorithm (Spaghetti) takes twice as long once
    statistics are asked for as the block-based decision tree (BBDT) does; both scan the image
    in the same 2x2 blocks and number the components in the order of their first block, so the
    labels and statistics are the same."""
    n, lab, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask.view(np.uint8), 8, cv2.CV_32S, cv2.CCL_BBDT)
    return n, lab, stats


def label(low: np.ndarray, high: np.ndarray | None = None) -> Components:
    """Components of the bool mask ``low``; ``strong`` counts the ``high`` pixels in each."""
    n, lab, stats = with_stats(low)
    st = stats[1:].astype(np.int64)
    if high is None:
        strong = st[:, 4].copy()
    else:
        strong = np.bincount(lab[high], minlength=n)[1:].astype(np.int64)
    return Components(lab, st[:, 4], strong, st[:, 0], st[:, 0] + st[:, 2], st[:, 1],
                      st[:, 1] + st[:, 3])


def _inner_contours(mask: np.ndarray) -> list[np.ndarray]:
    contours, hier = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                      cv2.CHAIN_APPROX_SIMPLE)
    if hier is None:
        return []
    return [c for c, h in zip(contours, hier[0]) if h[3] >= 0]


def _hole_size(c: np.ndarray) -> float:
    # a hole's contour runs along its own pixels: area + half the perimeter is its pixel count
    return cv2.contourArea(c) + 0.5 * cv2.arcLength(c, True) + 1


def hole_sizes(mask: np.ndarray) -> list[float]:
    """The size in px of each background region enclosed by the ink."""
    return [_hole_size(c) for c in _inner_contours(mask)]


def holes(mask: np.ndarray, min_area: float = 0.0) -> int:
    """Background regions enclosed by the ink, of at least ``min_area`` px (contour area)."""
    inner = _inner_contours(mask)
    if min_area <= 0:
        return len(inner)
    return sum(1 for c in inner if _hole_size(c) >= min_area)


def close3(mask: np.ndarray) -> np.ndarray:
    """3x3 closing with a margin (pinholes of dithered scans and noisy strokes filled)."""
    m = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.morphologyEx(m, cv2.MORPH_CLOSE, _SQUARE)[1:-1, 1:-1] > 0


def grow(mask: np.ndarray, r: int = 1) -> np.ndarray:
    """Binary dilation (of a bool mask) by a (2r+1) square."""
    if r <= 0:
        return mask
    return cv2.dilate(mask.view(np.uint8), square(2 * r + 1)).view(bool)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in px: area / half the boundary length (a strip w x L has ~2L edge)."""
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    inner = cv2.erode(mask.view(np.uint8), _CROSS, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0)
    edge = area - int(np.count_nonzero(inner))
    return area / max(edge / 2.0, 1.0)


def bridged(mask: np.ndarray, r: int) -> np.ndarray:
    """Labels of ``mask`` padded by ``r`` and grown by ``r`` px: gaps up to 2r closed."""
    near = grow(np.pad(mask, r), r)
    return cv2.connectedComponents(near.view(np.uint8), connectivity=8)[1]
