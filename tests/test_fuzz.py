"""The fuzzing suite: property-based tests (Hypothesis) over the request parsers and the
preprocessing. Whatever arrives - random bytes, mutated PNG/JPEG/GIF files, JSON of any shape,
multipart bodies built or broken at random - the service answers 2xx or 4xx with a JSON body,
in bounded time, and nothing escapes; ``preprocess(bytes)`` returns a 28x28 image or raises
``ImageError``.

``make test`` runs the "short" profile (the same examples every run); ``DIGITLAB_FUZZ=long``
(or ``--hypothesis-profile long``) explores 2,000 fresh examples a property (docs/server.md).
"""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conftest import encode
from digitlab import safejson
from digitlab.errors import ImageError
from digitlab.preprocess import preprocess
from digitlab.server import Limits, Settings, create_app

LIMITS = Limits(max_upload_bytes=64_000, max_batch_bytes=200_000, max_pixels=4_000_000,
                max_batch=4)
SECONDS = 5.0  # one request or one preprocess call, on a shared 2-core machine (ms, normally)
ANSWERS = {200, 400, 408, 413, 415, 422}


@pytest.fixture(scope="module")
def client(small_model_dir):
    with TestClient(create_app(small_model_dir, Settings(limits=LIMITS)),
                    raise_server_exceptions=False) as c:
        yield c


def seeds() -> dict[str, bytes]:
    """Valid files to mutate: a digit-like stroke as PNG, JPEG, an animated GIF, BMP, TIFF."""
    img = Image.new("L", (48, 48), 255)
    a = np.asarray(img).copy()
    a[10:38, 22:27] = 0
    img = Image.fromarray(a)
    return {fmt: encode(img, fmt, **kw) for fmt, kw in (
        ("PNG", {}), ("JPEG", {"quality": 80}), ("BMP", {}), ("TIFF", {}),
        ("GIF", {"save_all": True, "append_images": [img.rotate(20), img.rotate(40)]}))}


SEEDS = seeds()


@st.composite
def mutated(draw) -> bytes:
    """A valid image with a few random edits: flipped bytes, a cut, an insertion, a repeat."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "zero-run"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "repeat":
            n = draw(st.integers(1, 200))
            data[at:at] = data[at:at + n] * draw(st.integers(1, 20))
        else:
            n = draw(st.integers(1, 64))
            data[at:at + n] = b"\0" * n
        if not data:
            break
    return bytes(data)


def assert_answer(r, started: float) -> None:
    assert time.perf_counter() - started < SECONDS
    assert r.status_code in ANSWERS, (r.status_code, r.text[:300])
    body = r.json()
    if r.status_code >= 400:
        assert isinstance(body["detail"], str) and body["detail"]
        assert "\n" not in body["detail"]


def post(client, path: str, content: bytes, kind: str | None):
    started = time.perf_counter()
    r = client.post(path, content=content, headers={"content-type": kind} if kind else {})
    assert_answer(r, started)
    return r


CONTENT_TYPES = ["image/png", "image/gif", "image/jpeg", "application/octet-stream",
                 "application/json", "multipart/form-data; boundary=xyz", "text/plain", None]


@given(body=st.binary(max_size=4096), kind=st.sampled_from(CONTENT_TYPES),
       path=st.sampled_from(["/api/predict", "/api/predict/batch"]))
def test_random_bytes(client, body, kind, path):
    post(client, path, body, kind)


@given(data=mutated(), form=st.sampled_from(["raw", "json", "multipart", "batch-json"]))
def test_mutated_images(client, data, form):
    if form == "raw":
        post(client, "/api/predict", data, "application/octet-stream")
    elif form == "json":
        body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(data).decode()})
        post(client, "/api/predict", body.encode(), "application/json")
    elif form == "multipart":
        started = time.perf_counter()
        assert_answer(client.post("/api/predict", files={"file": ("x", data, "image/png")}),
                      started)
    else:
        body = json.dumps({"images": [base64.b64encode(data).decode()] * 2})
        r = post(client, "/api/predict/batch", body.encode(), "application/json")
        if r.status_code == 200:
            for item in r.json()["results"]:
                assert item["ok"] or item["status"] in ANSWERS - {200}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=6),
    max_leaves=40)


@given(value=JSON_VALUES, wrap=st.sampled_from(["bare", "image", "images"]),
       path=st.sampled_from(["/api/predict", "/api/predict/batch"]))
def test_json_of_any_shape(client, value, wrap, path):
    doc = value if wrap == "bare" else {wrap: value}
    post(client, path, json.dumps(doc).encode(), "application/json")


@given(value=JSON_VALUES)
def test_safejson_reads_what_json_writes(value):
    text = json.dumps(value)
    assert safejson.loads(text) == json.loads(text)


@given(text=st.text(alphabet='[]{}",:0123456789.eE-+ tfrnulasNI\\x\n', max_size=200))
def test_safejson_agrees_with_json_on_noise(text):
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        expected = ValueError
    try:
        got = safejson.loads(text, max_depth=10_000, allow_nan=True)
    except ValueError:
        got = ValueError
    if expected is ValueError or got is ValueError:
        assert expected is got, (text, expected, got)
    else:
        assert json.dumps(got) == json.dumps(expected)


@st.composite
def multipart(draw) -> tuple[bytes, str]:
    """A multipart body built from random parts, sometimes broken afterwards."""
    boundary = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_'", min_size=1,
                            max_size=40))
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(["file", "files", "image", "other", "", 'we"ird']))
        filename = draw(st.one_of(st.none(), st.text(max_size=20)))
        kind = draw(st.sampled_from(["image/png", "application/octet-stream", "text/plain", "",
                                     "image/x-eps"]))
        content = draw(st.one_of(mutated(), st.binary(max_size=300),
                                 st.just(SEEDS["PNG"])))
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else "")
        head = f"Content-Disposition: {disposition}\r\n" + (
            f"Content-Type: {kind}\r\n" if kind else "")
        parts.append(f"--{boundary}\r\n{head}\r\n".encode("utf-8", "surrogateescape") + content
                     + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    if draw(st.booleans()):  # break it: cut, or lose a line break
        at = draw(st.integers(0, len(body)))
        body = body[:at] if draw(st.booleans()) else body.replace(b"\r\n", b"\n", 1)
    return body, f"multipart/form-data; boundary={boundary}"


@given(body=multipart(), path=st.sampled_from(["/api/predict", "/api/predict/batch"]))
def test_random_multipart(client, body, path):
    post(client, path, body[0], body[1])


@given(data=st.one_of(mutated(), st.binary(max_size=2048)), number=st.booleans())
def test_preprocess_returns_an_image_or_an_image_error(data, number):
    from digitlab.preprocess import segment_digits
    started = time.perf_counter()
    try:
        out = segment_digits(data) if number else [preprocess(data)]
    except ImageError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        for p in out:
            assert p.image.shape == (28, 28) and p.image.dtype == np.uint8
    assert time.perf_counter() - started < SECONDS


def tiff_with_a_broken_second_page() -> bytes:
    """Two pages; the second's ImageWidth tag renamed to an unknown one (what the long fuzzing
    run found: Pillow's ``n_frames`` then raises TypeError("Missing dimensions"))."""
    import struct
    data = bytearray(encode(Image.new("L", (8, 8), 255), "TIFF", save_all=True,
                            append_images=[Image.new("L", (8, 8), 0)]))
    first = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[first:first + 2])[0]
    second = struct.unpack("<I", data[first + 2 + 12 * n:first + 6 + 12 * n])[0]
    for i in range(struct.unpack("<H", data[second:second + 2])[0]):
        at = second + 2 + 12 * i
        if struct.unpack("<H", data[at:at + 2])[0] == 256:
            data[at:at + 2] = struct.pack("<H", 65000)
    return bytes(data)


def test_broken_second_tiff_page_is_read_at_its_first_page_by_open_image():
    from digitlab.imageformats import open_image
    with open_image(io.BytesIO(tiff_with_a_broken_second_page())) as im:
        im.load()
        assert im.size == (8, 8)


def test_broken_second_tiff_page_through_preprocess():
    try:
        preprocess(tiff_with_a_broken_second_page())
    except ImageError:
        pass


@given(seed=st.integers(0, 2**32 - 1), h=st.integers(2, 20), w=st.integers(2, 20),
       channels=st.sampled_from([0, 1, 3, 4]), k=st.integers(1, 8),
       cut=st.tuples(*[st.integers(0, 7)] * 4))
def test_unblocked_undoes_a_blockwise_enlargement_and_nothing_else(seed, h, w, channels, k,
                                                                     cut):
    """Random pixels enlarged k times by nearest neighbour and cut anywhere come back as
    those pixels (where whole blocks remain) or as they are; never empty, never another
    dtype or channel count."""
    from digitlab.preprocess import PARAMS
    from digitlab.preprocess.decode import unblocked
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h, w, channels) if channels else (h, w), dtype=np.uint8)
    big = np.repeat(np.repeat(small, k, axis=0), k, axis=1)
    top, bottom, left, right = (min(c, k - 1) for c in cut)
    big = np.ascontiguousarray(big[top:big.shape[0] - bottom, left:big.shape[1] - right])
    out = unblocked(big, PARAMS)
    assert out.dtype == big.dtype and out.shape[2:] == big.shape[2:] and out.size > 0
    if out is not big:
        f = round(big.shape[1] / out.shape[1])
        # every block, whole or cut, is one pixel
        assert out.shape[:2] == (-(-(big.shape[0] + top) // k), -(-(big.shape[1] + left) // k)
                                 ) or f != k
        if f == k and not (top or left):  # whole blocks from the first one on: exact
            assert np.array_equal(out[:h - 1, :w - 1], small[:h - 1, :w - 1])


@given(h=st.integers(4, 300), w=st.integers(4, 300), angle=st.floats(-10.0, 10.0),
       x=st.floats(0.0, 1.0), y=st.floats(0.0, 1.0))
def test_straighten_keeps_all_the_ink_and_maps_back_to_it(h, w, angle, x, y):
    """A page turned by any small angle: every pixel of it lands on the straightened canvas
    (none cut off at the corners), and the map back sends a point of ink to where it was."""
    from digitlab.preprocess.skew import straighten
    ink = np.zeros((h, w), np.float32)
    px, py = min(w - 1, int(x * w)), min(h - 1, int(y * h))
    ink[py, px] = 1.0
    out, back = straighten(ink, angle)
    assert out.shape[0] >= h - 1 and out.shape[1] >= w - 1
    assert out.sum() == pytest.approx(1.0, abs=0.02)  # bilinear weights of one pixel
    ys, xs = np.nonzero(out)
    cx, cy = (out[ys, xs] @ xs) / out.sum(), (out[ys, xs] @ ys) / out.sum()
    bx, by = back @ np.array([cx, cy, 1.0])
    assert abs(bx - px) < 0.75 and abs(by - py) < 0.75
