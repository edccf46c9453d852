"""The formats digitlab opens and the checks before decoding: format list, frames, file kinds."""

from __future__ import annotations

import io
import os
import time

import pytest
from PIL import Image

from conftest import encode, fragmented_gif, hostile_text_png, many_frame_gif
from digitlab.errors import ImageError, ImageLimitError
from digitlab.imageformats import (GIF_BLOCKS, MAX_FRAMES, READ_FORMATS, check_regular_file,
                                   count_frames, open_image)


@pytest.mark.parametrize("fmt", READ_FORMATS)
def test_every_read_format_opens(fmt):
    data = encode(Image.new("RGB", (12, 9), "white"), fmt)
    with open_image(io.BytesIO(data), "x") as im:
        assert im.size == (12, 9) and im.format in (fmt, "MPO")
        im.load()


@pytest.mark.parametrize("fmt", ["EPS", "ICO", "TGA", "PCX", "PPM", "SGI", "IM"])
def test_other_formats_pillow_reads_are_refused(fmt):
    data = encode(Image.new("RGB", (16, 16), "white"), fmt)
    Image.open(io.BytesIO(data)).close()  # Pillow itself would open it
    with pytest.raises(ImageError, match="not a PNG, JPEG, GIF, BMP, TIFF or WebP image"):
        open_image(io.BytesIO(data), "x")


def test_eps_never_reaches_ghostscript(monkeypatch):
    """Issue 15: EPS uploads reached Pillow's Ghostscript path."""
    from PIL import EpsImagePlugin
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", lambda *a, **k: calls.append(a))
    eps = encode(Image.new("L", (16, 16), 255), "EPS")
    with pytest.raises(ImageError):
        open_image(io.BytesIO(eps))
    assert calls == []


def test_gif_of_300000_frames_is_refused_cheaply():
    """Issue 15: a 5 MB GIF of 300,000 1x1 frames; Pillow's n_frames walks them all."""
    gif = many_frame_gif(300_000)
    assert len(gif) > 4_000_000
    start = time.process_time()
    with pytest.raises(ImageLimitError, match=f"more than {MAX_FRAMES} frames"):
        open_image(io.BytesIO(gif), "anim.gif")
    assert time.process_time() - start < 0.05


@pytest.mark.parametrize("frames", [1, 2, 7, MAX_FRAMES])
def test_frame_counts_agree_with_pillow(frames):
    gif = many_frame_gif(frames)
    with open_image(io.BytesIO(gif)) as im:
        assert im.tell() == 0 and im.size == (1, 1)
        assert count_frames(im, io.BytesIO(gif), MAX_FRAMES) == frames
    assert Image.open(io.BytesIO(gif)).n_frames == frames


@pytest.mark.parametrize("fmt,extra", [("GIF", {}), ("TIFF", {}), ("TIFF", {"big_tiff": True}),
                                       ("PNG", {}), ("WEBP", {})])
def test_animated_formats_count_their_frames(fmt, extra):
    pages = [Image.new("L", (8, 8), 40 * i) for i in range(5)]
    data = encode(pages[0], fmt, save_all=True, append_images=pages[1:], **extra)
    with open_image(io.BytesIO(data)) as im:
        assert count_frames(im, io.BytesIO(data), 100) == Image.open(io.BytesIO(data)).n_frames
        assert count_frames(im, io.BytesIO(data), 2) > 2  # GIF, TIFF: stop at 3
        assert im.tell() == 0


def test_tiff_with_more_pages_than_the_limit_is_refused():
    pages = [Image.new("L", (1, 1))] * (MAX_FRAMES + 1)
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageLimitError, match="frames"):
        open_image(io.BytesIO(data))


def test_gif_split_into_tiny_blocks_is_refused_without_walking_them_all():
    gif = fragmented_gif(2_000_000)  # 4 MB of one-byte sub-blocks
    start = time.process_time()
    with pytest.raises(ImageLimitError, match="blocks"):
        open_image(io.BytesIO(gif))
    assert time.process_time() - start < 0.2
    with open_image(io.BytesIO(fragmented_gif(GIF_BLOCKS // 2))) as im:  # a few are fine
        im.load()


def test_pixel_limit_is_the_callers_and_pillows_own_is_not_named():
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(ImageLimitError, match="300x200 = 60000 pixels; the limit is 50000"):
        open_image(io.BytesIO(data), max_pixels=50_000)
    with open_image(io.BytesIO(data), max_pixels=60_000):
        pass


def test_hostile_png_text_chunk_gives_a_message_without_pillow_internals():
    """Issue 15: Pillow's 'PngImagePlugin.MAX_TEXT_CHUNK' reached clients."""
    png = hostile_text_png()
    with pytest.raises(ImageError) as info:
        open_image(io.BytesIO(png), "x")
    assert "PngImagePlugin" not in str(info.value) and "MAX_TEXT_CHUNK" not in str(info.value)
    assert str(info.value) == "x: corrupt or truncated image header"


def test_check_regular_file(tmp_path):
    good = tmp_path / "a.png"
    good.write_bytes(encode(Image.new("L", (4, 4)), "PNG"))
    assert check_regular_file(good).st_size > 0
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file but a FIFO"):
        check_regular_file(fifo)
    with pytest.raises(ImageError, match="character device"):
        check_regular_file("/dev/null")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        check_regular_file(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="is a directory"):
        check_regular_file(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        check_regular_file(tmp_path / "missing.png")
