"""Renderer A (digitlab.synth): deterministic situations and look-alikes, and the training
pools made of them through preprocessing."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from digitlab import synth


@pytest.fixture(scope="module")
def digits(mnist):
    return mnist.train_images[:40].numpy(), mnist.train_labels[:40].numpy()


@pytest.mark.parametrize("name", list(synth.SITUATIONS))
def test_situations_render_decodable_images_deterministically(digits, name):
    x, _ = digits
    render = synth.SITUATIONS[name]
    a = render(np.random.default_rng(3), x[0])
    assert a == render(np.random.default_rng(3), x[0])
    assert a != render(np.random.default_rng(4), x[0])
    img = Image.open(io.BytesIO(a))
    img.load()
    assert min(img.size) >= 8


def test_lookalikes_are_not_digit_shaped_characters():
    # characters a careful reader could take for a digit are never rendered as junk
    assert not set(synth.LOOKALIKE_CHARS) & set("0123456789OoQIlij|JZzSsGbgqy")
    rng = np.random.default_rng(0)
    for _ in range(10):
        Image.open(io.BytesIO(synth.lookalike(rng))).load()


def test_training_fonts_are_whole_families_kept_apart_from_scoring():
    families = synth.fonts()
    if not families:
        pytest.skip("no training font installed (`make fonts`)")
    for faces in families:
        for path, cmap in faces:
            parts = path.split("/")
            assert any(p in synth.TRAINING_FONTS for p in parts)
            # the benchmark's scoring families (benchmarks/realworld.py) are never trained on
            assert not {"liberation", "freefont", "urw-base35", "comic-neue",
                        "dancingscript"} & set(parts)
            assert all(ord(c) in cmap for c in "0123456789AMWamw")
    assert len(synth.font_families()) == len(families)


def test_a_character_a_font_lacks_is_never_printed(monkeypatch):
    # a face without "<" and ">" (as some handwriting faces): those are never drawn with it,
    # since a missing glyph would print as a box
    if not synth.fonts():
        pytest.skip("no training font installed (`make fonts`)")
    path, cmap = synth.fonts()[0][0]
    lacking = frozenset(cmap - {ord("<"), ord(">")})
    monkeypatch.setattr(synth, "fonts", lambda: (((path, lacking),),))
    drawn = []
    monkeypatch.setattr(synth.ImageDraw.ImageDraw, "text",
                        lambda self, xy, ch, **kw: drawn.append(ch))
    rng = np.random.default_rng(0)
    for _ in range(200):
        synth._glyph(rng, 40)
    assert drawn and not set(drawn) & {"<", ">"}


def test_boxed_number_is_one_wide_image(digits):
    x, _ = digits
    img = Image.open(io.BytesIO(synth.boxed_number(np.random.default_rng(0), list(x[:3]))))
    assert img.width > 1.5 * img.height  # three cells side by side (and a margin)


def test_pools_are_preprocessed_and_do_not_depend_on_the_worker_count(digits, monkeypatch):
    x, y = digits
    monkeypatch.setattr(synth, "CHUNK", 15)  # several chunks
    px, py = synth.situation_pool(x, y, 40, seed=5)
    assert px.dtype == np.uint8 and px.shape[1:] == (28, 28) and 30 <= len(px) <= 40
    assert set(py.tolist()) <= set(y.tolist()) and len(py) == len(px)
    assert px.reshape(len(px), -1).max(1).min() > 100  # each an MNIST-style digit with ink
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # serial
    sx, sy = synth.situation_pool(x, y, 40, seed=5)
    assert np.array_equal(px, sx) and np.array_equal(py, sy)
    hard = synth.lookalike_pool(20, seed=1)
    assert hard.dtype == np.uint8 and hard.shape[1:] == (28, 28) and len(hard) >= 5


def test_crossed_seven_adds_a_bar_through_the_stem_and_nothing_else(digits, mnist):
    x, y = mnist.train_images.numpy(), mnist.train_labels.numpy()
    sevens = x[y == 7][:20]
    rng = np.random.default_rng(0)
    for d in sevens:
        c = synth.crossed_seven(rng, d)
        assert (c >= d).all()
        added = (c > 100) & (d <= 100)
        ys, xs = np.nonzero(d > 100)
        ay, ax = np.nonzero(added)
        assert len(ay) >= 3
        h = ys.max() - ys.min()
        # within the middle of the digit's height, and wider than it is tall (a bar)
        assert ys.min() + 0.25 * h <= ay.min() and ay.max() <= ys.min() + 0.85 * h
        assert ax.max() - ax.min() > ay.max() - ay.min()


def test_thinning_leaves_connected_centre_lines_one_pixel_wide():
    import cv2
    ring = np.zeros((100, 100), np.uint8)
    cv2.circle(ring, (50, 50), 35, 255, 15)  # a bold O: 15 px strokes
    bar = np.zeros((60, 30), np.uint8)
    bar[5:55, 10:19] = 255  # a bold 1: 9 px wide, 50 tall
    skel = synth._thinned(ring > 0)
    # one closed loop round the hole, about as long as the circle (2 pi 35 = 220 px)
    assert cv2.connectedComponents(skel.view(np.uint8), connectivity=8)[0] == 2
    assert cv2.connectedComponents((~skel).view(np.uint8), connectivity=4)[0] == 3
    assert 180 <= np.count_nonzero(skel) <= 280
    line = synth._thinned(bar > 0)
    cols = np.nonzero(line.any(axis=0))[0]
    assert len(cols) <= 2 and 12 <= cols.mean() <= 16  # down the middle, not its edges
    assert np.count_nonzero(line) >= 35


def test_pen_redrawn_glyphs_take_the_pens_width_not_the_fonts(monkeypatch):
    import cv2
    bold = np.zeros((120, 120), np.uint8)
    cv2.circle(bold, (60, 60), 40, 255, 24)  # a very bold face's O
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = synth._pen_redrawn(rng, bold, 100) > 127
        # the widest stroke (twice the largest inscribed radius) is the pen's: 3-9 px for a
        # 100 px glyph, whatever the face's own weight (24 px here)
        width = 2 * cv2.distanceTransform(out.view(np.uint8), cv2.DIST_L2, 3).max()
        assert 2 <= width <= 11
        assert cv2.connectedComponents(out.view(np.uint8), connectivity=8)[0] == 2
