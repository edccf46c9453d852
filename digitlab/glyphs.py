"""Characters as people draw them, for renderer A (``digitlab.synth``): the training fonts,
glyphs redrawn with a pen along their skeleton, pen doodles, and a writer's distortion."""

from __future__ import annotations

import glob
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw

# Letters and signs that no careful reader takes for a digit: B, D and T too (a straight
# stem beside bowls or under a centred bar; the issue's own list of look-alikes names B).
# Left out as ambiguous: O o Q (0), I l i j J | (1), Z z (2), S s (5), G b (6), g q (9),
# y (4 or 9).
LOOKALIKE_CHARS = "ABCDEFHKLMNPRTUVWXYacefhkmnprtuvwx+=%#&@*?!<>$"


# The font families renderer A prints with: the folder under /usr/share/fonts -> the Debian
# package that installs it (`make fonts`). Sans, serif and handwriting faces, so that the model
# learns letters from digits whatever the hand. None of them is a family that renderer B or the
# benchmark's printed digits score with (benchmarks/realworld.py SCORING_FONTS), DejaVu apart,
# which every machine has and both use. Missing packages are skipped: with DejaVu alone (the
# Python wheels' machines), renderer A still works.
TRAINING_FONTS = {
    "dejavu": "fonts-dejavu-core", "lato": "fonts-lato", "open-sans": "fonts-open-sans",
    "roboto": "fonts-roboto-unhinted", "cantarell": "fonts-cantarell", "fonts-go": "fonts-go",
    "quicksand": "fonts-quicksand", "crosextra": "fonts-crosextra-carlito",
    "linux-libertine": "fonts-linuxlibertine", "humor-sans": "fonts-humor-sans",
    "fifthhorseman": "fonts-dkg-handwriting", "bwht": "fonts-bwht", "breip": "fonts-breip",
    "rufscript": "fonts-rufscript", "kristi": "fonts-kristi",
}
_FONT_ROOTS = ("/usr/share/fonts", "/usr/local/share/fonts")


@lru_cache(maxsize=1)
def _font_table() -> dict[str, tuple[tuple[str, frozenset[int]], ...]]:
    """The installed families of ``TRAINING_FONTS`` (by folder, sorted): (path, the characters
    it has) for each face with every digit and every letter of ``LOOKALIKE_CHARS`` (math faces,
    and the keyboard face that draws each letter in a box, left out)."""
    try:
        from fontTools.ttLib import TTFont  # comes with matplotlib
    except ImportError:  # pragma: no cover - without it: trust the faces with ASCII
        TTFont = None
    need = {ord(c) for c in "0123456789" + LOOKALIKE_CHARS if c.isalnum()}
    families: dict[str, list[tuple[str, frozenset[int]]]] = {}
    for root in _FONT_ROOTS:
        for path in sorted(glob.glob(f"{root}/**/*.[ot]tf", recursive=True)):
            family = next((part for part in path.split("/") if part in TRAINING_FONTS), None)
            if family is None or "Math" in path or "_K" in path:  # Biolinum Keyboard: boxed
                continue
            try:
                cmap = (frozenset(TTFont(path, lazy=True).getBestCmap() or ()) if TTFont
                        else frozenset(range(32, 127)))
            except Exception:  # a broken font file is skipped
                continue
            if need <= cmap:
                families.setdefault(family, []).append((path, cmap))
    return {f: tuple(families[f]) for f in sorted(families)}


def fonts() -> tuple[tuple[tuple[str, frozenset[int]], ...], ...]:
    """Renderer A's fonts, one tuple of (path, characters) faces per installed family."""
    return tuple(_font_table().values())


def font_families() -> list[str]:
    """The Debian packages of the font families renderer A found on this machine."""
    return [TRAINING_FONTS[f] for f in _font_table()]


def missing_font_packages() -> list[str]:
    """The packages of ``TRAINING_FONTS`` whose faces this machine lacks (``make fonts``
    installs them all): renderer A then prints with fewer faces than the shipped model's."""
    return sorted(set(TRAINING_FONTS.values()) - set(font_families()))


def doodle(rng: np.random.Generator, size: int) -> Image.Image:
    """A non-digit drawn with a pen: a check mark, cross, arrow, smiley, star, plus, wave,
    asterisk, hash, triangle, spiral or heart - the doodles people draw where a digit goes."""
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    w = max(2, int(size * rng.uniform(0.04, 0.12)))
    s = size
    kind = int(rng.integers(14))
    kind = 2 if kind >= 12 else kind  # arrows point anywhere: three shares
    j = lambda: rng.uniform(-0.05, 0.05) * s  # noqa: E731 - a writer's wobble

    def line(pts):
        d.line([(x * s + j(), y * s + j()) for x, y in pts], fill=255, width=w, joint="curve")
    if kind == 0:
        line([(0.15, 0.55), (0.4, 0.85), (0.9, 0.15)])
    elif kind == 1:
        line([(0.15, 0.15), (0.85, 0.85)])
        line([(0.85, 0.15), (0.15, 0.85)])
    elif kind == 2:  # an arrow: straight, double-headed or curved, pointing anywhere
        a = rng.uniform(0, 2 * np.pi)
        cos, sin = np.cos(a), np.sin(a)

        def turned(pts):  # about the centre, kept inside the square
            return [(0.5 + 0.8 * ((x - 0.5) * cos - (y - 0.5) * sin),
                     0.5 + 0.8 * ((x - 0.5) * sin + (y - 0.5) * cos)) for x, y in pts]
        head = rng.uniform(0.15, 0.3)
        if rng.random() < 0.25:
            t = np.linspace(np.pi, 0.15 * np.pi, 16)
            shaft = [(0.5 + 0.4 * np.cos(ti), 0.65 - 0.35 * np.sin(ti)) for ti in t]
        else:
            shaft = [(0.1, 0.5), (0.9, 0.5)]

        def arrowhead(tip, before):  # two barbs back from the tip, away from ``before``
            (ex, ey), (px, py) = tip, before
            dx, dy = (ex - px, ey - py) / np.hypot(ex - px, ey - py)
            line(turned([(ex - head * (dx - dy), ey - head * (dy + dx)), (ex, ey),
                         (ex - head * (dx + dy), ey - head * (dy - dx))]))
        line(turned(shaft))
        arrowhead(shaft[-1], shaft[-2])
        if rng.random() < 0.25:  # double-headed
            arrowhead(shaft[0], shaft[1])
    elif kind == 3:
        d.ellipse([0.1 * s, 0.1 * s, 0.9 * s, 0.9 * s], outline=255, width=w)
        d.ellipse([0.3 * s, 0.3 * s, 0.4 * s, 0.42 * s], fill=255)
        d.ellipse([0.6 * s, 0.3 * s, 0.7 * s, 0.42 * s], fill=255)
        d.arc([0.28 * s, 0.4 * s, 0.72 * s, 0.75 * s], 20, 160, fill=255, width=w)
    elif kind == 4:
        line([(0.5 + 0.42 * np.sin(a), 0.5 - 0.42 * np.cos(a)) for a in np.arange(6) * 4 * np.pi / 5])
    elif kind == 5:
        line([(0.5, 0.1), (0.5, 0.9)])
        line([(0.1, 0.5), (0.9, 0.5)])
    elif kind == 6:  # a wave
        line([(0.05 + 0.9 * t, 0.5 + 0.2 * np.sin(t * 4 * np.pi)) for t in np.linspace(0, 1, 24)])
    elif kind == 7:  # an asterisk
        for a in np.arange(3) * np.pi / 3:
            line([(0.5 - 0.4 * np.cos(a), 0.5 - 0.4 * np.sin(a)),
                  (0.5 + 0.4 * np.cos(a), 0.5 + 0.4 * np.sin(a))])
    elif kind == 8:  # a hash
        for v in (0.35, 0.65):
            line([(v + 0.05, 0.1), (v - 0.05, 0.9)])
            line([(0.1, v), (0.9, v)])
    elif kind == 9:  # a triangle
        line([(0.5, 0.1), (0.9, 0.85), (0.1, 0.85), (0.5, 0.1)])
    elif kind == 10:  # a spiral
        t = np.linspace(0, 4 * np.pi, 60)
        r = 0.05 + 0.4 * t / t[-1]
        line([(0.5 + ri * np.cos(ti), 0.5 + ri * np.sin(ti)) for ri, ti in zip(r, t)])
    else:  # a heart
        t = np.linspace(0, 2 * np.pi, 40)
        line([(0.5 + 0.025 * 16 * np.sin(ti) ** 3,
               0.45 - 0.025 * (13 * np.cos(ti) - 5 * np.cos(2 * ti) - 2 * np.cos(3 * ti)
                               - np.cos(4 * ti))) for ti in t])
    return img


def pen_redrawn(rng: np.random.Generator, a: np.ndarray, size: int) -> np.ndarray:
    """A font's glyph (uint8, bright on black) redrawn as a pen would: its skeleton traced
    with a round pen of a random width, so that bold and thin faces alike give single-line
    letters and digits. (A margin of 4 px is added first, for the pen to draw into.)"""
    skel = thinned(cv2.copyMakeBorder(a, 4, 4, 4, 4, cv2.BORDER_CONSTANT) > 127)
    pen = max(2, int(size * rng.uniform(0.03, 0.09))) | 1
    out = cv2.dilate(skel.view(np.uint8) * np.uint8(255),
                     cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (pen, pen)))
    return cv2.GaussianBlur(out, (3, 3), 0)


def thinned(m: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning (1984) of a bool mask: the one-pixel-wide, connected centre
    lines of its strokes. (OpenCV has it only in its contrib build, which replaces the whole
    package; scikit-image's ``skeletonize`` would bring SciPy and three more packages for this
    one use in rendering training data.)"""
    m = np.pad(m, 1)
    while True:
        changed = False
        for step in (0, 1):
            # the 8 neighbours, clockwise from north: P2 .. P9
            p = [m[:-2, 1:-1], m[:-2, 2:], m[1:-1, 2:], m[2:, 2:],
                 m[2:, 1:-1], m[2:, :-2], m[1:-1, :-2], m[:-2, :-2]]
            b = sum(x.astype(np.uint8) for x in p)
            a = sum((~p[i] & p[(i + 1) % 8]).astype(np.uint8) for i in range(8))
            if step == 0:
                cond = ~(p[0] & p[2] & p[4]) & ~(p[2] & p[4] & p[6])
            else:
                cond = ~(p[0] & p[2] & p[6]) & ~(p[0] & p[4] & p[6])
            drop = m[1:-1, 1:-1] & (b >= 2) & (b <= 6) & (a == 1) & cond
            if drop.any():
                m[1:-1, 1:-1] &= ~drop
                changed = True
        if not changed:
            return m[1:-1, 1:-1]


def wobble(rng: np.random.Generator, a: np.ndarray) -> np.ndarray:
    """A smooth random displacement (elastic distortion): a printed glyph drawn by hand."""
    h, w = a.shape
    amp = 0.06 * max(h, w)
    field = rng.normal(0, 1, (2, 4, 4)).astype(np.float32)
    dx = cv2.resize(field[0], (w, h), interpolation=cv2.INTER_CUBIC) * amp
    dy = cv2.resize(field[1], (w, h), interpolation=cv2.INTER_CUBIC) * amp
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(a, gx + dx, gy + dy, cv2.INTER_LINEAR, borderValue=0)
