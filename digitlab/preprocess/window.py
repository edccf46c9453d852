"""The search window for straight runs: the faint ink's bounding box, widened to suit OpenCV's
vectorised morphology (``lines``)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# OpenCV's morphology handles rows in 32-byte vectors and the rest pixel by pixel: on 8-bit
# images a multiple of this many pixels wide, a long kernel runs up to twice as fast.
_VECTOR = 32


@dataclass
class Window:
    """Where runs are searched for: the faint ink's bounding box, with at least a pixel of
    empty margin on each side that is not the image's edge, widened to a multiple of
    ``_VECTOR`` columns where the image (or empty columns added beyond an empty edge) allows.
    Every run lies in the box, and an empty margin ends a run as the empty image around it
    does, so the runs found in the window are those of the whole image."""

    rows: slice
    cols: slice
    pad: tuple[int, int]  # empty columns added left and right of ``cols``
    shape: tuple[int, int]  # the image's

    @classmethod
    def around(cls, on: np.ndarray) -> Window:
        h, w = on.shape
        x, y, bw, bh = cv2.boundingRect(on)
        c0, c1 = max(0, x - 1), min(w, x + bw + 1)
        width = -(-(c1 - c0) // _VECTOR) * _VECTOR
        pad = (0, 0)
        if width <= w:  # wider within the image, to the right first
            c1 = min(w, c0 + width)
            c0 = c1 - width
        else:
            c0, c1 = 0, w
            if x + bw < w:  # (the image's last column is empty)
                pad = (0, width - w)
            elif x > 0:
                pad = (width - w, 0)
        return cls(slice(max(0, y - 1), min(h, y + bh + 1)), slice(c0, c1), pad, (h, w))

    def cut(self, on: np.ndarray) -> np.ndarray:
        near = on[self.rows, self.cols]
        if self.pad != (0, 0):
            near = cv2.copyMakeBorder(near, 0, 0, *self.pad, cv2.BORDER_CONSTANT, value=0)
        return near

    def paste(self, a: np.ndarray) -> np.ndarray:
        """A window's array (labels) over the whole image, zero outside the window."""
        full = np.zeros(self.shape, a.dtype)
        full[self.rows, self.cols] = a[:, self.pad[0]:a.shape[1] - self.pad[1]]
        return full

    @property
    def origin(self) -> tuple[int, int]:
        return self.cols.start - self.pad[0], self.rows.start
