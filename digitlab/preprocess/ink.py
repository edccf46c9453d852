"""Ink: polarity, one channel, background removal, contrast normalisation, blank and noise.

The result is an ink map in [0, 1] (1 = full stroke contrast) on which every later stage
works. Dark ink is divided by the paper level (reflectance: shadows scale ink and paper alike),
bright ink has the background subtracted. Crops (form cells, thumbnails) have one paper level:
the majority class of an Otsu split, since their ink may cover the whole border.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .components import frozen, square
from .params import Params


@dataclass
class Ink:
    ink: np.ndarray  # float32 (H, W) in [0, 1], 1 = full stroke contrast
    gray: np.ndarray  # the chosen channel, as decoded
    dark_ink: bool
    contrast: float  # stroke contrast before normalisation (fraction of full scale)
    noise: float  # robust sd of the paper, as a fraction of the stroke contrast
    reason: str | None


def clip01(a: np.ndarray) -> np.ndarray:
    """Clip a float array (no NaN) to [0, 1] in place: np.clip's argument handling costs
    several us a call, more than the clipping of a working-size image."""
    return np.minimum(np.maximum(a, 0.0, out=a), 1.0, out=a)


def flatten_alpha(a: np.ndarray) -> np.ndarray:
    """RGBA -> RGB on a backdrop that contrasts with the opaque pixels (a canvas exports black
    strokes on transparent black; white strokes on transparent must stay visible too)."""
    rgb, alpha = a[:, :, :3], a[:, :, 3:4]
    if alpha.min() > 0.98:
        return rgb
    opaque = alpha[:, :, 0] > 0.5
    lum = rgb[opaque].mean() if opaque.any() else 0.0
    backdrop = 1.0 if lum < 0.5 else 0.0
    return rgb * alpha + backdrop * (1.0 - alpha)


def _ring(shape: tuple[int, ...]) -> int:
    """Width of the border strips that show the paper: wide enough that a printed line along
    the edge (a form box cut out of a scan) or a stroke touching it is a minority in them."""
    return max(1, min(shape[:2]) // 12)


def _ring_fraction(mask: np.ndarray) -> float:
    """The share of True on the outermost ring of pixels."""
    ring = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return np.count_nonzero(ring) / ring.size


def _crop_paper(lum: np.ndarray, wider: float) -> tuple[np.ndarray, bool]:
    """A crop's paper pixels and polarity: an Otsu split of the grey levels. The paper is the
    class that covers most of the crop, unless that is a close call (a bold digit cut out
    tightly), when the wider class (strokes are narrow, paper has room) decides, or if neither
    is clearly wider, the class covering most of the border; a dark border round a light
    middle is a printed frame, not the paper."""
    u8 = np.clip(lum * 255.0 + 0.5, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    bright = u8 > t
    f_img = np.count_nonzero(bright) / bright.size
    f_border = _ring_fraction(bright)
    wide = _wider_class(bright, wider) if 0.3 <= f_img <= 0.7 else None
    if wide is not None:
        # a close call on area: the paper is the class with room in it (the margins, the
        # inside of loops), the ink the one made of strokes, whichever covers more
        paper_bright = wide
    elif f_border <= 0.15 and _framed(bright):
        paper_bright = True
    else:
        paper_bright = f_img >= 0.6 or (f_img >= 0.4 and f_border >= 0.5) or (
            f_img > 0.35 and f_border >= 0.8)
    paper = bright if paper_bright else ~bright
    if not paper.any():
        paper = np.ones_like(bright)
    return paper, paper_bright


def _framed(bright: np.ndarray) -> bool:
    """Does a crop whose outer ring is dark show a printed frame round a light cell: the band
    just inside the ring (15-35% of the way in, where a cell's paper is) mostly light, and the
    corners inside it light too? Round a bold light digit on dark paper, the band is mostly
    the dark paper, or the digit leaves the dark paper showing in the corners."""
    h, w = bright.shape
    a0, a1 = int(0.15 * h), int(0.35 * h)
    b0, b1 = int(0.15 * w), int(0.35 * w)
    band = np.concatenate([bright[a0:a1, b0:w - b0].ravel(), bright[h - a1:h - a0, b0:w - b0].ravel(),
                           bright[a1:h - a1, b0:b1].ravel(), bright[a1:h - a1, w - b1:w - b0].ravel()])
    corners = np.concatenate([bright[a0:a1, b0:b1].ravel(), bright[a0:a1, w - b1:w - b0].ravel(),
                              bright[h - a1:h - a0, b0:b1].ravel(),
                              bright[h - a1:h - a0, w - b1:w - b0].ravel()])
    return (np.count_nonzero(band) >= 0.65 * max(1, band.size)
            and np.count_nonzero(corners) >= 0.5 * max(1, corners.size))


def _wider_class(bright: np.ndarray, ratio: float) -> bool | None:
    """Which class of a two-class crop is wider: True for the bright one, False for the dark,
    None when neither's widest inscribed disc is ``ratio`` times the other's (distance
    transforms; the ink is strokes of one pen, the paper has room around and inside them)."""
    u8 = bright.view(np.uint8)
    d_bright = float(cv2.distanceTransform(u8, cv2.DIST_L2, 3).max())
    d_dark = float(cv2.distanceTransform(1 - u8, cv2.DIST_L2, 3).max())
    if d_bright >= ratio * d_dark:
        return True
    if d_dark >= ratio * d_bright:
        return False
    return None


def _dark_ink_page(g: np.ndarray, border_spread: float, wider_ratio: float) -> bool:
    """Polarity of a page: is the ink darker than the paper?

    The paper is what the border shows: a plane fitted to the medians of 16 border segments
    follows uneven lighting, and a bold digit rarely covers much of the border. The ink is the
    side of the residual histogram with more contrast mass beyond the paper's own spread
    (mass, not quantiles: a small digit is < 1% of a photo). When the segments stray from the
    plane by more than ``border_spread`` (a cell cut out tightly, its box and a bold digit
    both along the edges: white, ink and box segments), the border shows no paper level, and
    the whole image's median stands in for the plane: the paper is most of a page. Where the
    plane finds light ink and the median dark, the class with room in it (``_wider_class``,
    by ``wider_ratio``) decides, if it also covers most of the page.
    """
    h, w = g.shape
    # The paper level from the border, seen at low resolution (a printed frame along the edge
    # or a stroke touching it is averaged into a minority of each strip) in strips a sixth of
    # the side wide.
    f = min(1.0, 64.0 / max(h, w))
    small = g if f >= 1.0 else cv2.resize(g, (max(8, round(w * f)), max(8, round(h * f))),
                                          interpolation=cv2.INTER_AREA)
    sh, sw = small.shape
    k = max(2, min(sh, sw) // 6)
    # 4 segments per side: each side's strip cut into 4, the medians by sorting
    v = np.concatenate([_medians(np.take(small, idx)) for idx in _segments(sh, sw, k)])
    A, pinv = _plane_design(sh, sw, k)
    coef = pinv @ v
    res = np.abs(v - A @ coef)
    spread = float(np.sort(res)[8])
    # the masses on the same low-resolution view (averaged, not strided: a strided sample can
    # miss every 1 px line of a grid; a small digit is still some dozens of pixels there)
    if spread > border_spread:
        return _darker_ink(small - _median(small, None), 0.04)
    xx, yy = _plane_grid(small.shape)
    dark = _darker_ink(small - (coef[0] + coef[1] * xx + coef[2] * yy), max(0.04, 4.0 * spread))
    if not dark and _darker_ink(small - _median(small, None), 0.04):
        # light ink by the border, dark by the page's median: a row of bold boxes printed
        # round the page darkens every border segment alike, and the paper inside reads as
        # light ink (only this way round: most pages are dark ink, and pay nothing here).
        # The paper is the class with room in it (the ink is strokes), if one clearly is and
        # it covers most of the page too (on graph paper, a bold digit is wider than the
        # squares between the lines, which are most of the page: the border stands). Split
        # at full resolution (a 64 px view blurs a row of small boxes into grey), the plane
        # taken off (the median does not follow uneven light).
        gx, gy = _plane_grid(g.shape)
        u8 = cv2.convertScaleAbs(g - (coef[0] + coef[1] * gx + coef[2] * gy), alpha=127.5,
                                 beta=127.5)
        _, bright = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        wider = _wider_class(bright.view(bool), wider_ratio)
        if wider is not None and wider == (2 * cv2.countNonZero(bright) > bright.size):
            return wider
    return dark


def _darker_ink(r: np.ndarray, margin: float) -> bool:
    """Is there more contrast mass below the paper level than above it (``r``: the image less
    the paper level; ``margin``: the paper's own spread)?"""
    return float(np.maximum(-r - margin, 0.0).sum()) > float(np.maximum(r - margin, 0.0).sum())


def _median(v: np.ndarray, where: np.ndarray | None) -> float:
    """The median of ``v`` (in [0, 1]) where ``where`` holds, to 1/255, from a histogram: one
    pass (np.median sorts, or slows down ~10x on blank paper's one repeated value)."""
    return _quantile_u8(cv2.convertScaleAbs(v, alpha=255.0), 0.5, where) / 255.0


def _quantile_u8(u8: np.ndarray, q: float, where: np.ndarray | None = None) -> float:
    """The ``q`` quantile (a grey level, 0-255) of an 8-bit image where ``where`` holds (all of
    it for None), from its histogram."""
    hist = cv2.calcHist([u8], [0], None if where is None else where.view(np.uint8), [256],
                        [0, 256]).ravel()
    cum = np.cumsum(hist)
    return float(np.searchsorted(cum, q * cum[-1]))


def _medians(rows: np.ndarray) -> np.ndarray:
    """Row medians by sorting: np.partition (and np.median) slow down ~10x on rows that are
    mostly one value, as blank paper is."""
    return np.sort(rows, axis=1)[:, rows.shape[1] // 2]


@lru_cache(maxsize=64)
def _segments(h: int, w: int, k: int) -> list[np.ndarray]:
    """Where the 16 border segments lie: flat pixel indices, one row per segment (top 1-4,
    bottom 1-4 in strips ``k`` px deep, then left 1-4, right 1-4), in one array when all are
    the same size (a square image), else one for the top and bottom, one for the sides."""
    qw, qh = w // 4, h // 4
    idx = np.arange(h * w).reshape(h, w)
    tb = [idx[rows, :4 * qw].reshape(k, 4, qw).transpose(1, 0, 2).reshape(4, -1)
          for rows in (slice(0, k), slice(h - k, h))]
    lr = [idx[:4 * qh, cols].reshape(4, qh * k) for cols in (slice(0, k), slice(w - k, w))]
    if qw == qh:
        return [frozen(np.concatenate(tb + lr))]
    return [frozen(np.concatenate(tb)), frozen(np.concatenate(lr))]


@lru_cache(maxsize=64)
def _plane_design(h: int, w: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the 16 border segments lie (1, x, y in image fractions), and the least-squares
    solver for a plane through their medians."""
    centres = (np.arange(4) + 0.5) / 4
    ones = np.ones(4)
    A = np.concatenate([
        np.stack([ones, centres, ones * (k / 2) / h], 1),          # top
        np.stack([ones, centres, 1 - ones * (k / 2) / h], 1),      # bottom
        np.stack([ones, ones * (k / 2) / w, centres], 1),          # left
        np.stack([ones, 1 - ones * (k / 2) / w, centres], 1)])     # right
    return A, np.linalg.pinv(A)


@lru_cache(maxsize=64)
def _plane_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres as fractions of the image (x row, y column)."""
    yy = ((np.arange(shape[0], dtype=np.float32) + 0.5) / shape[0])[:, None]
    xx = ((np.arange(shape[1], dtype=np.float32) + 0.5) / shape[1])[None, :]
    return xx, yy


def _channel(rgb: np.ndarray, dark: bool, paper: np.ndarray | None) -> np.ndarray:
    """One channel in which every ink colour stands out. Dark ink: each channel divided by the
    paper's colour (the median of the ``paper`` pixels), the darkest kept, so a yellow or red
    pen on white or tinted paper is as dark as a black one. Bright ink on a dark ground (no
    ``paper`` needed): the brightest channel."""
    # (channel by channel: a min or max over a length-3 axis is ~20x slower in numpy)
    r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    if not dark:
        return np.maximum(np.maximum(r, g), b)
    assert paper is not None
    inv = [1.0 / max(_median(c, paper), 0.05) for c in (r, g, b)]
    out = r * np.float32(inv[0])
    np.minimum(out, g * np.float32(inv[1]), out=out)
    np.minimum(out, b * np.float32(inv[2]), out=out)
    return np.minimum(out, 1.0, out=out)


def _grain(g: np.ndarray, level: float, core: np.ndarray) -> float:
    """The spread of a crop's paper (a robust sd, fraction of full scale) on its ``core``
    pixels: the smaller of their spread round the paper ``level`` and their pixel-to-pixel
    spread (what a 3x3 blur takes out; a grain's sd is about 1.25 times that). A blurred,
    enlarged cell is all long ramps round a bold stroke: they spread the levels, but they are
    no grain."""
    spread = _median(np.abs(g - level), core)
    if spread <= 0.0:
        return 0.0
    fine = 1.25 * _median(np.abs(g - cv2.GaussianBlur(g, (3, 3), 0)), core)
    return 1.4826 * min(spread, fine)


def _border_paper(lum: np.ndarray, dark_ring: float) -> np.ndarray:
    """Where a page's paper colour is measured: the border ring (``_ring``), unless its median
    is under ``dark_ring`` times the page's light level (the 99th percentile) - a bold box
    printed along the edge of a cell cut out tightly fills the ring - when it is the light
    class of an Otsu split instead."""
    k = _ring(lum.shape)
    ring = np.zeros(lum.shape, bool)
    ring[:k], ring[-k:], ring[:, :k], ring[:, -k:] = True, True, True, True
    u8 = cv2.convertScaleAbs(lum, alpha=255.0)
    if _quantile_u8(u8, 0.5, ring) >= dark_ring * _quantile_u8(u8, 0.99):
        return ring
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return u8 > t


def _paper_field(g: np.ndarray, dark: bool, tint_max: float) -> np.ndarray:
    """The paper level under every pixel: block extrema (max for dark ink) over blocks larger
    than any stroke, a 3x3 median over blocks (a block entirely inside a bold stroke takes its
    neighbours' level; a stray bright speck is ignored), upsampled bilinearly."""
    h, w = g.shape
    # (at most half the short side: on a wide strip of tinted cells, blocks as tall as the
    # strip take in its white margins, and the tint reads as faint ink all along)
    block = max(4, min(max(h, w) // 5, min(h, w) // 2))
    ph, pw = -h % block, -w % block
    p = cv2.copyMakeBorder(g, 0, ph, 0, pw, cv2.BORDER_REPLICATE) if ph or pw else g
    nh, nw = p.shape[0] // block, p.shape[1] // block
    # (down each column of blocks, then along each row of the result: two reductions over
    # contiguous axes are ~4x faster than one over axes (1, 3))
    reduce = np.maximum.reduce if dark else np.minimum.reduce
    b = reduce(reduce(p.reshape(nh, block, nw * block), axis=1).reshape(nh, nw, block), axis=2)
    b = cv2.medianBlur(b, 3)
    field = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    if not dark:
        return field
    # A tinted cell or a shadow's edge is a step in the paper that blocks straddle (the tint
    # beside white paper would read as faint ink): a grey closing wider than any stroke follows
    # such steps exactly. It is taken where it is a light shade of the block level (a tint);
    # where it is much darker, it is a stroke wider than the closing, and the blocks stand.
    close = _closing(g, block)
    # (in place, with OpenCV's mask: np.where costs ~5x more on a working-size image)
    shade = cv2.compare(close, field * np.float32(1.0 - tint_max), cv2.CMP_GE)
    cv2.copyTo(cv2.min(field, close), shade, field)
    return field


def _closing(g: np.ndarray, size: int) -> np.ndarray:
    """A grey closing of ``g`` (in [0, 1]) with a square about ``size`` px wide, on 8-bit data
    (several times faster than float) and at half resolution for images over 200 px."""
    h, w = g.shape
    u8 = cv2.convertScaleAbs(g, alpha=255.0)
    half = max(h, w) >= 200
    if half:
        u8 = cv2.resize(u8, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        size //= 2
    # (a closing is a dilation, then an erosion; when the dilation is white throughout - strokes
    # thinner than the square on white paper - the erosion leaves it so)
    k = square(size | 1)
    c = cv2.dilate(u8, k, borderType=cv2.BORDER_REPLICATE)
    if cv2.minMaxLoc(c)[0] < 255:
        c = cv2.erode(c, k, borderType=cv2.BORDER_REPLICATE)
    if half:
        c = cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.multiply(c, np.float32(1.0 / 255.0), dtype=np.float32)


@lru_cache(maxsize=256)
def _by_deviation(m: int) -> tuple[np.ndarray, np.ndarray]:
    """The 256 grey levels (as fractions of full scale) ordered by their distance from level
    ``m`` (stable), and those distances in that order."""
    dev = np.abs(np.arange(256, dtype=np.float32) / 255.0 - float(m) / 255.0)
    order = np.argsort(dev, kind="stable")
    return frozen(order), frozen(dev[order])


def ink_map(a: np.ndarray, crop: bool, p: Params, tiny: bool = False) -> Ink:
    """Working image (H, W, C) -> ink map, or a reason (blank, noise) when no stroke stands out.
    A ``tiny`` crop (a few px a side, enlarged) has no paper to measure grain on: only its
    contrast is checked here, and the shape of its ink later tells noise from a digit."""
    if a.shape[2] == 4:
        a = flatten_alpha(a)
    lum = a[:, :, 0] if a.shape[2] == 1 else cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    if crop:
        paper, dark = _crop_paper(lum, p.crop_wider)
        g = lum if a.shape[2] == 1 else _channel(a, dark, paper)
        level = _median(g, paper)
        ink = (level - g) if dark else (g - level)
        # the paper's grain, from the paper class alone (the ink may cover 40% of a crop),
        # away from the strokes' blurred edges
        core = cv2.erode(paper.view(np.uint8), np.ones((5, 5), np.uint8)) > 0
        grain = 0.0 if tiny or not core.any() else _grain(g, level, core)
    else:
        dark = _dark_ink_page(lum, p.border_spread, p.crop_wider)
        g = lum if a.shape[2] == 1 else _channel(
            a, dark, _border_paper(lum, p.dark_ring) if dark else None)
        # (in place: the field is this call's own)
        ink = _paper_field(g, dark, p.tint_max)
        if dark:  # 1 - g / max(field, 0.04)
            np.subtract(1.0, np.divide(g, np.maximum(ink, 0.04, out=ink), out=ink), out=ink)
        else:  # g - field
            np.subtract(g, ink, out=ink)
    clip01(ink)
    # Statistics from a 256-bin histogram: one pass, no sorting of the whole image.
    hist = cv2.calcHist([cv2.convertScaleAbs(ink, alpha=255.0)], [0], None, [256],
                        [0, 256]).ravel()
    cum = np.cumsum(hist)
    n = int(cum[-1])
    robust_max = float(np.searchsorted(cum, n - min(5, n))) / 255.0  # 5th brightest pixel
    if crop:
        med, sigma = 0.0, grain + 1.0 / 255.0
    else:
        m = int(np.searchsorted(cum, n // 2))
        med = m / 255.0
        # the paper's spread: median absolute deviation from the median, from the histogram
        order, dev = _by_deviation(m)
        mad = float(dev[np.searchsorted(np.cumsum(hist[order]), n / 2.0)])
        sigma = 1.4826 * mad + 1.0 / 255.0
    if robust_max < max(p.blank_contrast, med + 6 * sigma):
        # nothing stands out of the paper's grain: a blank page, or pure noise if it is grainy
        reason = ("noise: no stroke stands out of the background" if sigma > p.noisy_paper
                  else "blank: no ink found")
        return Ink(np.zeros_like(ink), g, dark, robust_max, 1.0, reason)
    first = int(0.45 * robust_max * 255.0) + 1
    strong_cum = np.cumsum(hist[first:])
    level = (first + float(np.searchsorted(strong_cum, strong_cum[-1] // 2))) / 255.0
    level = max(level, 1.0 / 255.0)
    ink *= 1.0 / level
    np.minimum(ink, 1.0, out=ink)  # (it is >= 0 already)
    return Ink(ink, g, dark, level, (med + sigma) / level, None)
