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


@pytest.mark.parametrize("name", list(synth.SITUATIONS) + list(synth.LATER_SITUATIONS))
def test_situations_render_decodable_images_deterministically(digits, name):
    x, _ = digits
    render = {**synth.SITUATIONS, **synth.LATER_SITUATIONS}[name]
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
