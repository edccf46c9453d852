"""Characters as renderer A draws them (digitlab.glyphs): the training fonts, kept apart from
the benchmark's, and glyphs redrawn with a pen."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from digitlab import glyphs


def test_training_fonts_are_whole_families_kept_apart_from_scoring():
    families = glyphs.fonts()
    if not families:
        pytest.skip("no training font installed (`make fonts`)")
    for faces in families:
        for path, cmap in faces:
            parts = path.split("/")
            assert any(p in glyphs.TRAINING_FONTS for p in parts)
            # the benchmark's scoring families (benchmarks/realworld.py) are never trained on
            assert not {"liberation", "freefont", "urw-base35", "comic-neue",
                        "dancingscript"} & set(parts)
            assert all(ord(c) in cmap for c in "0123456789AMWamw")
    assert len(glyphs.font_families()) == len(families)


def test_thinning_leaves_connected_centre_lines_one_pixel_wide():
    ring = np.zeros((100, 100), np.uint8)
    cv2.circle(ring, (50, 50), 35, 255, 15)  # a bold O: 15 px strokes
    bar = np.zeros((60, 30), np.uint8)
    bar[5:55, 10:19] = 255  # a bold 1: 9 px wide, 50 tall
    skel = glyphs.thinned(ring > 0)
    # one closed loop round the hole, about as long as the circle (2 pi 35 = 220 px)
    assert cv2.connectedComponents(skel.view(np.uint8), connectivity=8)[0] == 2
    assert cv2.connectedComponents((~skel).view(np.uint8), connectivity=4)[0] == 3
    assert 180 <= np.count_nonzero(skel) <= 280
    line = glyphs.thinned(bar > 0)
    cols = np.nonzero(line.any(axis=0))[0]
    assert len(cols) <= 2 and 12 <= cols.mean() <= 16  # down the middle, not its edges
    assert np.count_nonzero(line) >= 35


def test_pen_redrawn_glyphs_take_the_pens_width_not_the_fonts(monkeypatch):
    bold = np.zeros((120, 120), np.uint8)
    cv2.circle(bold, (60, 60), 40, 255, 24)  # a very bold face's O
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = glyphs.pen_redrawn(rng, bold, 100) > 127
        # the widest stroke (twice the largest inscribed radius) is the pen's: 3-9 px for a
        # 100 px glyph, whatever the face's own weight (24 px here)
        width = 2 * cv2.distanceTransform(out.view(np.uint8), cv2.DIST_L2, 3).max()
        assert 2 <= width <= 11
        assert cv2.connectedComponents(out.view(np.uint8), connectivity=8)[0] == 2
