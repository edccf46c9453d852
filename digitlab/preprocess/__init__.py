"""Any user image -> an MNIST-style 28x28 digit: the one place in digitlab that does this.

MNIST digits are bright ink on a black background, fitted into a 20x20 box keeping their aspect
ratio (with anti-aliasing) and placed in a 28x28 field so that their centre of mass is at the
centre (LeCun's MNIST page). People's images are dark ink on paper of any colour, any size, lit
unevenly, photographed, drawn on transparent canvases, written in form boxes or on graph
paper, cut out of a scan as a tiny cell. ``preprocess`` bridges the two, one stage per module:

1. ``decode``: every format Pillow reads, first frame, EXIF orientation; photos shrink to a
   working size, tiny crops are enlarged;
2. ``ink``: polarity, one channel in which any pen stands out from any paper, the paper level
   divided out or subtracted, stroke contrast normalised to 1; blank and noise recognised;
3. ``lines``: printed structure (form boxes, comb fields, ruled lines, grids) found as long
   straight thin lines and removed, strokes crossing them kept, after ``skew`` straightened a
   page turned askew; ``frames``: the boxes that search misses (askew, rounded, small) found
   by their outline and removed the same way;
4. ``components`` and ``select``: 8-connected pieces, the digit as the main blob and the pieces
   that belong to it; shapeless inputs get a reason instead;
5. ``fit``: crop, fit into 20x20 and centre by mass in 28x28, as MNIST did.

Every threshold is a named field of ``params.Params``. Predict, the web service, image-folder
datasets and the tests all call ``preprocess``; ``segment_digits`` does the same for a row of
digits (number mode). An image that already is MNIST-like (28x28, bright on dark) passes
through unchanged, so accuracy on such data is the model's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from . import components as cc
from .components import Components
from .decode import (ImageSource, full_size, image_size, load_image, load_pixels, plain_mode,
                     to_working, unblocked)
from .fit import fit, to_u8
from .frames import find_frames
from .ink import Ink, ink_map
from .lines import find_printed
from .params import PARAMS, Params
from .remnants import remove_remnants
from .select import (DOTTED_MARK, RUNS_OFF, dot_below, group_columns, keep_pieces,
                     neighbour_reason, number_marks, select_digit, shape_reason,
                     without_edge_slivers)
from .skew import skew_angle, straighten

# The images are small: OpenCV's thread fan-out costs more than it saves, and server workers
# and forked predict workers already run one per core.
cv2.setNumThreads(1)

__all__ = ["ImageSource", "Params", "PARAMS", "Preprocessed", "load_image", "preprocess",
           "segment_digits"]


@dataclass
class Preprocessed:
    """One digit as the model sees it, plus what it took to get there."""

    image: np.ndarray  # (28, 28) uint8, bright ink on dark; all zeros if nothing was found
    reason: str | None = None  # why no digit could be found, else None
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # name -> uint8 image
    bbox: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in the input's pixels (as size)
    polarity: str = ""  # "dark-on-light" or "light-on-dark" (as found in the input)
    ink_fraction: float = 0.0  # share of the analysed image covered by ink
    components: int = 0  # ink pieces (specks excluded) that make up the digit
    size: tuple[int, int] = (0, 0)  # width, height of the input (EXIF turn applied; a big JPEG
                                    # decoded at reduced scale still gives its full size)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class _Analysis:
    work: np.ndarray  # working-size image (H, W, C) float
    scale: float  # working px per picture px
    pad: int  # margin added around a crop's ink map (working px)
    crop: bool
    size: tuple[int, int]  # the picture's width, height (see Preprocessed.size)
    ink: Ink
    low: np.ndarray  # bool mask (hysteresis region), printed lines removed
    printed: np.ndarray  # bool mask of the removed printed structure
    comps: Components
    keep: np.ndarray  # component ids that are not specks
    ink_fraction: float
    reason: str | None
    mnist: np.ndarray | None = None  # the pixels of a 28x28 one-channel input
    unblocked: np.ndarray | None = None  # a crop enlarged blockwise, at the size it was drawn
    # a page turned askew, straightened: the 2x3 affine map from the analysed pixels (ink,
    # masks, boxes) back to the working image's
    turn: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.low.shape  # type: ignore[return-value]


def _analyse(source: ImageSource, p: Params) -> _Analysis:
    img = load_pixels(source, draft=p.work_area)
    full = full_size(img)  # boxes and sizes are reported in the picture's own pixels
    size = image_size(img)  # (as decoded: a big JPEG at reduced scale)
    crop = min(size) < p.crop_px or max(size) <= p.crop_long_px
    drawn = unblocked(img, p) if crop else img
    an = _analyse_pixels(drawn, full, crop, p)
    if not crop and an.reason and an.reason.startswith("noise"):
        # a page's median pixel is its paper; a bold digit cut out tightly covers most of the
        # picture, and its ink was taken for a noisy background: read it as the cell it is
        cell_img = unblocked(img, p)
        cell = _analyse_pixels(cell_img, full, True, p)
        if cell.reason is None and np.count_nonzero(cell.comps.strong > 0) <= p.cell_pieces:
            an, drawn = cell, cell_img
    if drawn is not img:
        an.unblocked = drawn
    return an


def _analyse_pixels(img: Image.Image | np.ndarray, full: tuple[int, int], crop: bool,
                    p: Params) -> _Analysis:
    size = image_size(img)
    work, scale = to_working(img, p)
    if full != size:
        scale *= size[0] / full[0]
    mnist = None
    if size == (p.size, p.size) and work.shape[2] == 1:
        g = np.array(img if isinstance(img, np.ndarray) else plain_mode(img), dtype=np.uint8)
        if g.ndim == 3:  # grey stored as RGB(A): its one channel
            g = g[:, :, 0]
        ring = np.concatenate([g[:2].ravel(), g[-2:].ravel(), g[:, :2].ravel(), g[:, -2:].ravel()])
        mnist = g if ring.mean() < 128 else None  # MNIST format: a dark background
    ink = ink_map(work, crop, p, tiny=max(size) < p.tiny_px)
    pad = 0
    if crop:  # a digit filling its cell may touch every border: give it a margin
        pad = int(round(p.crop_pad * max(ink.ink.shape)))
        ink.ink = cv2.copyMakeBorder(ink.ink, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return _analyse_ink(work, scale, pad, crop, full, ink, mnist, p)


def _analyse_ink(work: np.ndarray, scale: float, pad: int, crop: bool, full: tuple[int, int],
                 ink: Ink, mnist: np.ndarray | None, p: Params,
                 turn: np.ndarray | None = None) -> _Analysis:
    """The pieces of ink in an ink map, printed structure removed; ``turn``: set when the map
    was straightened (see ``_Analysis.turn``)."""
    h, w = ink.ink.shape
    none = np.zeros((h, w), bool)
    empty = np.zeros(0, np.int64)
    if ink.reason:
        return _Analysis(work, scale, pad, crop, full, ink, none, none, cc.label(none), empty,
                         0.0, ink.reason, mnist, turn=turn)
    high = ink.ink > p.high
    low = ink.ink > max(p.low, min(3.0 * ink.noise, p.high - 0.05))
    # seeds: only regions holding strong pixels are ink (hysteresis)
    comps = cc.label(low, high)
    seeded = comps.strong > 0
    ink_fraction = int(comps.area[seeded].sum()) / float(h * w)
    if not seeded.any():
        return _Analysis(work, scale, pad, crop, full, ink, low, none, comps, empty, 0.0,
                         "blank: no ink found", mnist, turn=turn)
    if turn is None and not crop and (angle := skew_angle(comps, (h, w), p)):
        # a page turned askew: its long lines drift out of the line search's reach
        ink.ink, back = straighten(ink.ink, angle)
        return _analyse_ink(work, scale, pad, crop, full, ink, mnist, p, back)
    # the boxes of a row written into one by one: each too narrow for the line search and
    # for the frame search below, found as closed frames first
    boxes = none if crop else find_frames(comps, high, pad, p, narrow=True)
    if boxes.any():
        low = low & ~boxes
        comps = cc.label(low, high)
        seeded = comps.strong > 0
    # (most often every region holds a seed, and the seeded regions are all of ``low``)
    printed, lines = find_printed(
        ink.ink, low if seeded.all() else low & comps.mask(np.nonzero(seeded)[0]), pad, p,
        turned=turn is not None)
    printed = printed | boxes

    def without(printed: np.ndarray) -> tuple[np.ndarray, Components]:
        rest = low & ~printed
        return rest, cc.label(rest, high & rest)

    rest, comps_rest = low, comps
    if printed.any():
        if lines:
            printed |= remove_remnants(low & ~printed, printed, lines, p)
        rest, comps_rest = without(printed)
    # a box the line search missed (tilted, rounded, small): a closed frame round the writing
    framed = find_frames(comps_rest, high, pad, p)  # (the narrow boxes are in ``printed``)
    if framed.any():
        printed |= framed
        rest, comps_rest = without(printed)
    if printed.any():
        if (comps_rest.strong > 0).any():
            low, comps = rest, comps_rest
            # the soft edges of a removed line are not stroke ink either
            ink.ink = np.where(cc.grow(printed) & ~cc.grow(low), 0.0, ink.ink).astype(np.float32)
        elif len(lines) > 1 or framed.any() or boxes.any():  # a grid or an empty form
            return _Analysis(work, scale, pad, crop, full, ink, rest, printed, comps_rest, empty,
                             ink_fraction, "only printed lines", mnist, turn=turn)
        else:  # one straight stroke and nothing else: a 1 or a dash, judged as it is
            printed = none
    only = "only printed lines (and specks)" if printed.any() else "blank: only specks"
    keep, reason = keep_pieces(comps, h, w, only)
    if not reason:
        if ink.noise > 0.25:
            reason = "noise: the image has no clear background"
        elif ink_fraction > 0.45:
            reason = "noise: ink covers most of the image (texture or a photo, not a digit)"
    return _Analysis(work, scale, pad, crop, full, ink, low, printed, comps, keep,
                     ink_fraction, reason, mnist, turn=turn)


def _polarity(an: _Analysis) -> str:
    return "dark-on-light" if an.ink.dark_ink else "light-on-dark"


def _shown(a: np.ndarray) -> np.ndarray:
    """An (H, W[, C]) image as a debug stage shows it: grey or RGB (alpha left out)."""
    return a if a.ndim == 2 else a[:, :, :3] if a.shape[2] >= 3 else a[:, :, 0]


def _common_stages(an: _Analysis) -> dict[str, np.ndarray]:
    stages = {}
    if an.unblocked is not None:  # what decoding shrank a blockwise enlargement to
        stages["unblocked"] = _shown(an.unblocked)
    stages.update(input=to_u8(_shown(an.work)), gray=to_u8(an.ink.gray), ink=to_u8(an.ink.ink))
    if an.printed.any():
        stages["printed"] = to_u8(an.printed.astype(np.float32))
    return stages


def _bbox(an: _Analysis, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A box in analysis pixels -> the picture's pixels (crop margin removed, clipped)."""
    x0, y0, x1, y1 = (v - an.pad for v in box)
    if an.turn is not None:  # the straightened box's corners, back on the working image
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)
        back = corners @ an.turn[:, :2].T + an.turn[:, 2]
        (x0, y0), (x1, y1) = back.min(axis=0), back.max(axis=0)
    inv, (w, h) = 1.0 / an.scale, an.size
    return (min(w, max(0, int(x0 * inv))), min(h, max(0, int(y0 * inv))),
            min(w, max(0, int(np.ceil(x1 * inv)))), min(h, max(0, int(np.ceil(y1 * inv)))))


def _digit_from(an: _Analysis, group: list[int], keep_stages: bool, reason: str | None,
                p: Params) -> Preprocessed:
    c = an.comps
    digit = c.selection(group)
    box = x0, y0, x1, y1 = digit.box
    # soft anti-aliased edges just outside the thresholded region belong to the stroke
    patch = an.ink.ink[y0:y1, x0:x1] * cc.grow(digit.mask)
    out, fit_stages = fit(patch, digit.stroke_width, p)
    stages: dict[str, np.ndarray] = {}
    if keep_stages:
        stages = _common_stages(an)
        stages["mask"] = to_u8(c.mask(group).astype(np.float32) * 0.75 + an.low * 0.25)
        stages["crop"] = to_u8(patch)
        stages.update({k: to_u8(v) for k, v in fit_stages.items()})
        stages["output"] = to_u8(out)
    return Preprocessed(to_u8(out), reason, stages, _bbox(an, box), _polarity(an),
                        an.ink_fraction, len(group), an.size)


def _empty(an: _Analysis, reason: str, keep_stages: bool, p: Params) -> Preprocessed:
    stages = _common_stages(an) if keep_stages else {}
    if keep_stages:
        stages["mask"] = to_u8(an.low.astype(np.float32))
    return Preprocessed(np.zeros((p.size, p.size), np.uint8), reason, stages, None,
                        _polarity(an), an.ink_fraction, 0, an.size)


# ---------------------------------------------------------------------------------------------
# Public API


def preprocess(image: ImageSource, *, keep_stages: bool = False, params: Params = PARAMS
               ) -> Preprocessed:
    """Turn any image of one digit into the 28x28 bright-on-dark input MNIST models expect.

    ``image``: a path, encoded bytes, a PIL image or a numpy array (HxW or HxWxC; uint8, uint16,
    float in [0, 1] or bool). Raises ``ImageError`` if it cannot be decoded. When no digit is
    found, ``reason`` says why and ``image`` is all zeros - except for MNIST-format input
    (28x28, bright on dark), which always keeps its pixels, so that image-folder datasets of
    other classes (a Fashion-MNIST bag is a "solid blob") are not blanked. ``keep_stages``
    keeps the intermediate images (input, gray, ink, printed, mask, crop, fitted, output).
    """
    p = params
    an = _analyse(image, p)
    reason, group = an.reason, []
    if not reason:
        group = select_digit(an.comps, an.keep, an.shape, p)
        reason = shape_reason(an.comps, group, an.shape, an.crop, ink=an.ink.ink, p=p)
        if reason == RUNS_OFF and (trimmed := without_edge_slivers(
                an.comps, group, an.shape, p)) != group:
            group = trimmed
            reason = shape_reason(an.comps, group, an.shape, an.crop, ink=an.ink.ink, p=p)
        reason = reason or neighbour_reason(an.comps, an.keep, group)
        if not reason and dot_below(an.comps, an.keep, group,
                                    an.comps.selection(group).stroke_width, an.printed):
            reason = DOTTED_MARK
    same = an.mnist
    if reason:
        out = _empty(an, reason, keep_stages, p)
        if same is not None:
            out.image = same
        return out
    if same is not None:
        stages = {**_common_stages(an), "output": same} if keep_stages else {}
        box = an.comps.selection(group).box
        return Preprocessed(same, None, stages, _bbox(an, box), _polarity(an),
                            an.ink_fraction, len(group), an.size)
    return _digit_from(an, group, keep_stages, None, p)


def segment_digits(image: ImageSource, *, keep_stages: bool = False, params: Params = PARAMS
                   ) -> list[Preprocessed]:
    """Split a row of digits (a whole number) into MNIST-style digits, left to right.

    Pieces overlapping horizontally stay one digit; printed lines and boxes are removed; marks
    much smaller than the digits (dots, commas, specks) or much fainter (a stray pencil
    stroke, a light-toned box's remnant) are dropped (``number_marks``). Never empty: when no
    digit is found, the one element has ``reason`` set. Raises ``ImageError`` for unreadable
    input.
    """
    p = params
    an = _analyse(image, p)
    if an.reason:
        return [_empty(an, an.reason, keep_stages, p)]
    c = an.comps
    groups = number_marks(c, group_columns(c, an.keep), an.ink.ink, p)
    out = [_digit_from(an, g, keep_stages,
                       shape_reason(c, g, an.shape, an.crop, True, ink=an.ink.ink, p=p), p)
           for g in groups]
    if len(out) == 1 and (same := an.mnist) is not None and out[0].ok:
        out[0].image = same
    return out
