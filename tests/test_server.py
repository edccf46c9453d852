"""The web service through FastAPI's TestClient: every endpoint, input form, limit and error."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import time
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import encode, hostile_text_png, many_frame_gif, on_paper, serve_subprocess
from digitlab import cli
from digitlab.predict import Predictor
from digitlab.server import Limits, Settings, create_app

SMALL_LIMITS = Limits(max_upload_bytes=20_000, max_batch_bytes=60_000, max_pixels=250_000,
                      max_batch=4)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def digits(mnist):
    """Three MNIST test digits as 100x100 PNGs of ink on paper, with their labels."""
    return [(encode(on_paper(mnist.test_images[i].numpy(), 100, frac=1.0)), int(mnist.test_labels[i]))
            for i in range(3)]


@pytest.fixture(scope="module")
def client(small_model_dir):
    with TestClient(create_app(small_model_dir)) as c:
        yield c


@pytest.fixture(scope="module")
def tight(small_model_dir):
    """An app with small limits, so the limit tests send small bodies."""
    with TestClient(create_app(small_model_dir, Settings(limits=SMALL_LIMITS))) as c:
        yield c


def assert_error(r: httpx.Response, status: int, *words: str):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    for w in words:
        assert w.lower() in detail.lower(), detail


def assert_prediction(body: dict, with_input: bool = False):
    probs = body["probabilities"]
    assert len(probs) == 10 and abs(sum(probs) - 1) < 1e-4
    assert body["digit"] == int(np.argmax(probs)) and body["label"] == str(body["digit"])
    assert body["confidence"] == pytest.approx(max(probs))
    assert [t["digit"] for t in body["top_k"]] == list(np.argsort(probs)[::-1][:len(body["top_k"])])
    assert body["rejected"] is False and body["reason"] is None
    if not with_input:
        assert body["image"] is None
        return
    seen = Image.open(io.BytesIO(base64.b64decode(body["image"].split(",", 1)[1])))
    assert seen.format == "PNG" and seen.size == (28, 28)


# ---- the service --------------------------------------------------------------------------------

def test_health(client):
    assert client.get("/api/health").json() == {"status": "ok", "model_loaded": True,
                                                "version": __import__("digitlab").__version__,
                                                "feedback": False}


def test_model_info(client, small_model_dir):
    info = client.get("/api/model").json()
    assert info["architecture"] == "mlp100" and info["model_dir"] == small_model_dir.name
    assert len(info["weights_sha256"]) == 64
    assert info["classes"] == [str(i) for i in range(10)]
    assert info["parameters"] > 0 and 0 <= info["reject_threshold"] <= 1
    assert info["training"]["epochs"] == 1 and info["training"]["model"] == "mlp100"
    assert "val_accuracy" in info["metrics"]
    assert info["limits"]["max_upload_bytes"] == 5 * 1024 * 1024


def test_model_is_loaded_once(small_model_dir, digits, monkeypatch):
    loads = []
    real_init = Predictor.__init__
    monkeypatch.setattr(Predictor, "__init__",
                        lambda self, *a, **k: (loads.append(1), real_init(self, *a, **k))[1])
    app = create_app(small_model_dir)
    assert loads == []  # nothing happens at import or construction
    with TestClient(app) as c:
        for _ in range(3):
            assert c.post("/api/predict", content=digits[0][0],
                          headers={"content-type": "image/png"}).status_code == 200
    assert loads == [1]


def test_predict_multipart_matches_the_library(client, small_model_dir, digits):
    data, label = digits[0]
    r = client.post("/api/predict?include=input", files={"file": ("seven.png", data, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_prediction(body, with_input=True)
    assert body["digit"] == label
    # The service runs exactly the library's preprocessing and model.
    lib = Predictor(small_model_dir).predict_one(data)
    assert body["probabilities"] == pytest.approx(lib.probabilities, abs=1e-6)
    assert len(body["top_k"]) == 3 and body["number"] is None and body["digits"] is None


@pytest.fixture
def hops(monkeypatch):
    """The functions the routes hand to a worker thread (anyio.to_thread.run_sync), in order."""
    from digitlab.server import routes
    seen = []
    real_run_sync = routes.anyio.to_thread.run_sync

    async def counting_run_sync(fn, *args, **kwargs):
        seen.append(fn)
        return await real_run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(routes.anyio.to_thread, "run_sync", counting_run_sync)
    return seen


def test_small_images_run_on_the_event_loop_photos_in_a_thread(client, digits, mnist, hops):
    small = client.post("/api/predict", content=digits[0][0], headers={"content-type": "image/png"})
    assert small.status_code == 200 and hops == []
    photo = encode(on_paper(mnist.test_images[0].numpy(), 600, frac=1.0))  # 360,000 px
    big = client.post("/api/predict", content=photo, headers={"content-type": "image/png"})
    assert big.status_code == 200 and len(hops) == 1
    # the same answer either way
    assert big.json()["digit"] == small.json()["digit"] == digits[0][1]


@pytest.mark.parametrize("form", ["raw", "octet-stream", "json-data-url", "json-base64",
                                  "multipart-octet", "jpeg"])
def test_predict_input_forms_agree(client, digits, form):
    data, label = digits[1]
    expected = client.post("/api/predict", files={"file": ("x.png", data, "image/png")}).json()
    if form == "raw":
        r = client.post("/api/predict", content=data, headers={"content-type": "image/png"})
    elif form == "octet-stream":
        r = client.post("/api/predict", content=data,
                        headers={"content-type": "application/octet-stream"})
    elif form == "json-data-url":
        r = client.post("/api/predict", json={"image": data_url(data)})
    elif form == "json-base64":
        r = client.post("/api/predict", json={"image": base64.b64encode(data).decode()})
    elif form == "multipart-octet":  # what many HTTP clients send for a file part
        r = client.post("/api/predict", files={"file": ("x", data, "application/octet-stream")})
    else:
        jpeg = encode(Image.open(io.BytesIO(data)), "JPEG")
        r = client.post("/api/predict", content=jpeg, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_prediction(body)
    if form == "jpeg":
        assert body["digit"] == label
    else:
        assert body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)


def test_predict_top_k(client, digits):
    r = client.post("/api/predict?top_k=5", content=digits[0][0], headers={"content-type": "image/png"})
    assert len(r.json()["top_k"]) == 5
    probs = [t["probability"] for t in r.json()["top_k"]]
    assert probs == sorted(probs, reverse=True)
    assert_error(client.post("/api/predict?top_k=0", content=digits[0][0],
                             headers={"content-type": "image/png"}), 422, "top_k")
    assert_error(client.post("/api/predict?top_k=abc", content=digits[0][0],
                             headers={"content-type": "image/png"}), 422, "top_k")


def test_predict_blank_image_is_rejected_not_an_error(client):
    r = client.post("/api/predict", content=encode(Image.new("RGB", (100, 100), "white")),
                    headers={"content-type": "image/png"})
    assert r.status_code == 200
    body = r.json()
    assert body["rejected"] is True and body["digit"] is None and "blank" in body["reason"]
    # the model did not run: ten equal probabilities, no ranking, zero confidence
    assert body["probabilities"] == pytest.approx([0.1] * 10) and body["top_k"] == []
    assert body["confidence"] == 0.0


def test_predict_number(client, mnist):
    row = np.concatenate([mnist.test_images[i].numpy() for i in range(3)], axis=1)  # "721"
    img = Image.fromarray(255 - row).resize((84 * 4, 28 * 4), Image.BILINEAR)
    r = client.post("/api/predict?number=true&include=input", content=encode(img),
                    headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    truth = "".join(str(int(mnist.test_labels[i])) for i in range(3))
    assert len(body["digits"]) == 3 and len(body["number"]) == 3
    assert sum(a == b for a, b in zip(body["number"], truth)) >= 2  # a 1-epoch model may slip once
    for d in body["digits"]:
        assert len(d["probabilities"]) == 10 and d["image"].startswith("data:image/png;base64,")
    assert body["number"] == "".join(d["label"] if d["digit"] is not None else "?"
                                     for d in body["digits"])


def test_input_image_only_when_asked(client, digits, mnist, monkeypatch):
    from digitlab.server import schemas
    encoded = []
    real = schemas.png_base64
    monkeypatch.setattr(schemas, "png_base64", lambda img: (encoded.append(img.shape), real(img))[1])
    png = {"content-type": "image/png"}
    row = np.concatenate([mnist.test_images[i].numpy() for i in range(2)], axis=1)
    number = encode(Image.fromarray(255 - row).resize((56 * 4, 28 * 4), Image.BILINEAR))
    one = client.post("/api/predict", content=digits[0][0], headers=png).json()
    num = client.post("/api/predict?number=true", content=number, headers=png).json()
    batch = client.post("/api/predict/batch", json={"images": [data_url(digits[0][0])]}).json()
    assert one["image"] is None and batch["results"][0]["result"]["image"] is None
    assert num["image"] is None and all(d["image"] is None for d in num["digits"])
    assert encoded == []  # no PNG was made for nobody

    one = client.post("/api/predict?include=input", content=digits[0][0], headers=png).json()
    num = client.post("/api/predict?number=true&include=input", content=number, headers=png).json()
    batch = client.post("/api/predict/batch?include=input",
                        json={"images": [data_url(digits[0][0])]}).json()
    for url in (one["image"], num["image"], batch["results"][0]["result"]["image"],
                *(d["image"] for d in num["digits"])):
        assert url.startswith("data:image/png;base64,")
    assert encoded[0] == (28, 28)
    assert_error(client.post("/api/predict?include=everything", content=digits[0][0],
                             headers=png), 422, "include")


# ---- batch -----------------------------------------------------------------------------------

def test_batch_multipart_with_errors_per_image(client, digits):
    files = [("files", ("a.png", digits[0][0], "image/png")),
             ("files", ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")),
             ("files", ("notes.txt", b"hello", "text/plain")),
             ("files", ("c.png", digits[2][0], "image/png"))]
    r = client.post("/api/predict/batch", files=files)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert r.json()["count"] == 4 and [x["index"] for x in res] == [0, 1, 2, 3]
    assert [x["ok"] for x in res] == [True, False, False, True]
    assert [x["filename"] for x in res] == ["a.png", "broken.png", "notes.txt", "c.png"]
    assert res[1]["status"] == 400 and res[1]["error"] and res[1]["result"] is None
    assert res[2]["status"] == 415
    assert res[0]["result"]["digit"] == digits[0][1] and res[3]["result"]["digit"] == digits[2][1]
    single = client.post("/api/predict", content=digits[2][0], headers={"content-type": "image/png"})
    assert res[3]["result"]["probabilities"] == pytest.approx(single.json()["probabilities"], abs=1e-5)


def test_batch_json(client, digits):
    r = client.post("/api/predict/batch?top_k=2", json={"images": [data_url(d) for d, _ in digits]
                                                        + ["@@not base64@@"]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["ok"] for x in res] == [True, True, True, False]
    assert [x["result"]["digit"] for x in res[:3]] == [y for _, y in digits]
    assert all(len(x["result"]["top_k"]) == 2 for x in res[:3])
    assert res[3]["status"] == 400 and "base64" in res[3]["error"]


def test_batch_limits_and_forms(tight, digits):
    small = encode(Image.open(io.BytesIO(digits[0][0])).convert("L").resize((40, 40)))
    too_many = [("files", (f"{i}.png", small, "image/png")) for i in range(5)]
    assert_error(tight.post("/api/predict/batch", files=too_many), 413, "too many")
    assert_error(tight.post("/api/predict/batch", json={"images": [data_url(small)] * 5}), 413,
                 "too many")
    assert_error(tight.post("/api/predict/batch", json={"images": []}), 422, "images")
    assert_error(tight.post("/api/predict/batch", files={"note": (None, "no files")}), 422, "no images")
    assert_error(tight.post("/api/predict/batch", content=small,
                            headers={"content-type": "image/png"}), 415, "batch")
    # One image over the per-image limit fails alone; the others still get results.
    big = np.random.default_rng(0).integers(0, 256, (160, 160), dtype=np.uint8)
    files = [("files", ("ok.png", small, "image/png")),
             ("files", ("big.png", encode(Image.fromarray(big)), "image/png"))]
    res = tight.post("/api/predict/batch", files=files).json()["results"]
    assert res[0]["ok"] and not res[1]["ok"] and res[1]["status"] == 413


# ---- limits and errors ------------------------------------------------------------------------

def test_upload_size_limit(tight, client):
    noise = np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)
    big = encode(Image.fromarray(noise))  # ~40 KB of incompressible pixels
    assert len(big) > SMALL_LIMITS.max_upload_bytes
    assert_error(tight.post("/api/predict", content=big, headers={"content-type": "image/png"}),
                 413, "limit")
    assert_error(tight.post("/api/predict", files={"file": ("big.png", big, "image/png")}), 413)
    assert_error(tight.post("/api/predict", json={"image": data_url(big)}), 413)

    # Far over the limit, the body is refused before it is read: from its Content-Length...
    assert_error(tight.post("/api/predict", content=b"\0" * 200_000,
                            headers={"content-type": "image/png"}), 413, "request body is 200000")
    # ... or, with no Content-Length (chunked), as soon as the bytes received pass the limit.
    def chunks():
        for _ in range(100):
            yield b"\0" * 10_000
    assert_error(tight.post("/api/predict", content=chunks(), headers={"content-type": "image/png"}),
                 413, "request body is over the limit")
    # The default limit is 5 MB.
    six_mb = b"\x89PNG" + b"\0" * (6 * 1024 * 1024)
    assert_error(client.post("/api/predict", content=six_mb, headers={"content-type": "image/png"}),
                 413)


def test_decompression_bombs_are_refused_from_the_header(client, tight):
    bomb = png_header(30_000, 30_000)  # 900 Mpx declared in a ~100-byte file
    assert len(bomb) < 200
    assert_error(client.post("/api/predict", content=bomb, headers={"content-type": "image/png"}),
                 413, "pixels")
    assert_error(client.post("/api/predict", json={"image": data_url(bomb)}), 413, "pixels")
    # The pixel limit is configurable: 600x600 is over the tight app's 250,000.
    ok_size = encode(Image.new("L", (600, 600), 255))
    assert_error(tight.post("/api/predict", content=ok_size, headers={"content-type": "image/png"}),
                 413, "600x600")


@pytest.mark.parametrize("headers,content,words", [
    ({"content-type": "text/plain"}, b"7", ["text/plain"]),
    ({"content-type": "application/pdf"}, b"%PDF-1.4", ["application/pdf"]),
    ({}, b"\x89PNG", ["no content-type"]),
    ({"content-type": "application/x-www-form-urlencoded"}, b"file=7", ["urlencoded"]),
])
def test_unsupported_media_types(client, headers, content, words):
    assert_error(client.post("/api/predict", content=content, headers=headers), 415, *words)


def test_unsupported_types_inside_json_and_multipart(client):
    assert_error(client.post("/api/predict", json={"image": data_url(b"hello", "text/plain")}), 415)
    assert_error(client.post("/api/predict", files={"file": ("a.txt", b"hello", "text/plain")}), 415)


@pytest.mark.parametrize("kind,payload,status,words", [
    ("image/png", b"this is not a png", 400, ["cannot read"]),
    ("image/png", b"", 400, ["empty"]),
    ("image/jpeg", b"\xff\xd8\xff\xe0" + b"\0" * 40, 400, []),       # JPEG header, no image
    ("application/json", b"{not json", 400, ["invalid json"]),
    ("application/json", b'"just a string"', 422, []),
    ("application/json", b'{"image": 7}', 422, ["image"]),
    ("application/json", b'{"picture": "abc"}', 422, ["image"]),
    ("application/json", b'{"image": ""}', 422, ["image"]),
    ("application/json", b'{"image": "data:image/png;base64,%%%"}', 400, ["base64"]),
    ("application/json", b'{"image": "data:image/png,rawtext"}', 400, ["base64"]),
    ("application/json", b'{"image": "data:image/png;base64"}', 400, ["data url"]),
])
def test_bad_inputs(client, kind, payload, status, words):
    assert_error(client.post("/api/predict", content=payload, headers={"content-type": kind}),
                 status, *words)


def test_truncated_image_is_a_clean_400(client, digits):
    data = digits[0][0]
    assert_error(client.post("/api/predict", content=data[: len(data) // 2],
                             headers={"content-type": "image/png"}), 400)


def test_multipart_errors(client, digits):
    assert_error(client.post("/api/predict", files={"other": (None, "x")}), 422, "'file'")
    assert_error(client.post("/api/predict", files=[("file", ("a.png", digits[0][0], "image/png"))] * 2),
                 413, "at most 1")
    assert_error(client.post("/api/predict", content=b"--x\r\nbroken",
                             headers={"content-type": "multipart/form-data"}), 400)


def test_unknown_routes_and_methods_are_json(client):
    assert_error(client.get("/api/nothing"), 404)
    assert_error(client.get("/api/predict"), 405)
    assert_error(client.put("/api/health"), 405)


def test_no_input_makes_a_500_or_kills_the_app(client, digits):
    rng = np.random.default_rng(0)
    good = digits[0][0]
    bodies = [rng.bytes(int(rng.integers(0, 3000))) for _ in range(20)]
    bodies += [good[:n] + rng.bytes(40) + good[n + 40:] for n in rng.integers(8, len(good) - 40, 20)]
    bodies += [png_header(int(w), int(h)) for w, h in rng.integers(0, 70_000, (10, 2))]
    for body in bodies:
        for kind in ("image/png", "image/gif", "application/json"):
            r = client.post("/api/predict", content=body, headers={"content-type": kind})
            assert r.status_code in (200, 400, 413, 415, 422), (r.status_code, r.text)
            json.loads(r.text)
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.post("/api/predict", content=good, headers={"content-type": "image/png"}).status_code == 200


# ---- page and docs ------------------------------------------------------------------------------

def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    html = r.text
    for needle in ('<canvas id="pad"', 'id="brush"', 'id="undo"', 'id="clear"', 'id="number-mode"',
                   'id="file"', 'id="chart"', 'id="seen"', 'name="viewport"'):
        assert needle in html, needle
    import re
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(u.startswith("/") for u in refs), refs  # nothing from another host
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css"),
                        ("/static/favicon.svg", "image/svg+xml")):
        a = client.get(asset)
        assert a.status_code == 200 and kind in a.headers["content-type"], asset
        if not asset.endswith(".svg"):  # (an SVG names its XML namespace with a URL)
            assert "http://" not in a.text and "https://" not in a.text, asset
    js = client.get("/static/app.js").text
    for api in ("pointerdown", "pointermove", "pointerup", "/api/predict", "number=true",
                "include=input", "dragover", "drop", "toDataURL"):
        assert api in js, api


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/api/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"multipart/form-data", "image/*",
                                                      "application/json"}
    assert {"200", "400", "413", "415", "422"} <= set(predict["responses"])
    assert {p["name"] for p in predict["parameters"]} == {"number", "top_k", "include"}
    assert {"/api/predict/batch", "/api/health", "/api/model"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200
    # offline: every asset the docs page loads is served by the app itself
    assert "http://" not in docs.text and "https://" not in docs.text.replace("https://github.com", "")
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in docs.text and client.get(asset).status_code == 200


# ---- the serve command --------------------------------------------------------------------------

def test_serve_refuses_a_bad_model_dir(tmp_path, capsys):
    assert cli.main(["serve", "--model-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model directory not found" in err


def test_serve_refuses_a_busy_port(small_model_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["serve", "--model-dir", str(small_model_dir), "--port", str(port)]) == 2
    assert "cannot listen" in capsys.readouterr().err


def test_serve_runs_workers(small_model_dir, digits, tmp_path):
    """`digitlab serve --workers 2` (the import-string path) answers on a real socket."""
    with serve_subprocess(tmp_path, "--model-dir", small_model_dir, "--workers", 2) as (_, base):
        assert httpx.get(base + "/api/model").json()["model_dir"] == small_model_dir.name
        r = httpx.post(base + "/api/predict", files={"file": ("d.png", digits[0][0], "image/png")})
        assert r.status_code == 200 and r.json()["digit"] == digits[0][1]
    assert "serving" in (tmp_path / "serve.out").read_text()


# ---- issue 15: bounded work, answers in the server's own terms ---------------------------------

def test_json_batch_of_a_million_items_is_refused_while_parsing(client):
    """4 MB of a million tiny items: 4xx within 50 ms and 50 MB, not 20 s and 2 GB."""
    import tracemalloc
    body = ("{\"images\":[" + ",".join(["\"A\""] * 1_000_000) + "]}").encode()
    tracemalloc.start()
    start = time.perf_counter()
    r = client.post("/api/predict/batch", content=body,
                    headers={"content-type": "application/json"})
    took = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert_error(r, 413, "too many images", "32")
    # The test client's own copies of the 4 MB body count here too.
    assert took < 0.25 and peak < 50_000_000, (took, peak)
    assert client.get("/api/health").status_code == 200


@pytest.mark.parametrize("path", ["/api/predict", "/api/predict/batch"])
def test_deeply_nested_json_is_a_400_not_a_500(client, path):
    r = client.post(path, content=b"[" * 100_000 + b"]" * 100_000,
                    headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid json", "nested deeper")


def test_json_strings_longer_than_an_image_are_refused_while_parsing(tight):
    huge = "A" * (SMALL_LIMITS.max_json_string + 1)
    assert_error(tight.post("/api/predict", json={"image": huge}), 413, "larger than the limit")
    # the same string in a batch: the body limit is bigger, the image limit is the same
    r = tight.post("/api/predict/batch", content=json.dumps({"images": [huge[:50_000]]}),
                   headers={"content-type": "application/json"})
    assert_error(r, 413, "larger than the limit")


def test_model_info_shows_no_server_paths(tmp_path, small_model_dir):
    import shutil
    secret = tmp_path / "secret-place" / "model"
    shutil.copytree(small_model_dir, secret)
    cfg = json.loads((secret / "config.json").read_text())
    cfg["dataset"]["source"] = "/home/someone/private/digits"
    cfg["training"]["data"] = "/home/someone/private/digits"
    (secret / "config.json").write_text(json.dumps(cfg))
    with TestClient(create_app(secret)) as c:
        r = c.get("/api/model")
    assert r.status_code == 200
    assert str(tmp_path) not in r.text and "/home/someone" not in r.text

    def strings(v):
        if isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
        elif isinstance(v, str):
            yield v
    assert not [s for s in strings(r.json()) if s.startswith("/")]
    info = r.json()
    assert info["model_dir"] == "model" and info["dataset"]["source"] == "digits"
    assert info["input"]["normalisation"].endswith("(x - mean) / std")  # prose stays as it is


def test_errors_speak_the_servers_terms(client, digits):
    r = client.post("/api/predict", content=hostile_text_png(),
                    headers={"content-type": "image/png"})
    assert_error(r, 400, "cannot read the image")
    assert "PngImagePlugin" not in r.text and "MAX_TEXT_CHUNK" not in r.text
    # over Pillow's own decompression-bomb limit (179 Mpx): the server's limit is named
    r = client.post("/api/predict", content=png_header(20_000, 20_000),
                    headers={"content-type": "image/png"})
    assert_error(r, 413, "40000000")
    assert "178956970" not in r.text and "DOS" not in r.text
    # a decoding error after the header: no decoder wording, no "<bytes>"
    data = digits[0][0]
    r = client.post("/api/predict", content=data[: len(data) // 2],
                    headers={"content-type": "image/png"})
    assert_error(r, 400)
    assert "<bytes>" not in r.text and "(" not in r.json()["detail"]


def test_eps_upload_is_refused_before_any_decoder(client, monkeypatch):
    from PIL import EpsImagePlugin
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", lambda *a, **k: calls.append(a))
    eps = encode(Image.new("L", (16, 16), 255), "EPS")
    for kind in ("image/png", "application/postscript", "application/octet-stream"):
        r = client.post("/api/predict", content=eps, headers={"content-type": kind})
        assert r.status_code in (400, 415), r.text
    assert_error(client.post("/api/predict", files={"file": ("x.eps", eps, "image/x-eps")}), 400,
                 "not a PNG, JPEG, GIF, BMP, TIFF or WebP image")
    assert calls == []


def test_gif_of_300000_frames_is_refused_at_once(client):
    gif = many_frame_gif(300_000)
    start = time.perf_counter()
    r = client.post("/api/predict", content=gif, headers={"content-type": "image/gif"})
    assert_error(r, 413, "frames")
    assert time.perf_counter() - start < 0.3


def test_big_file_with_a_tiny_header_leaves_the_event_loop(client, hops):
    """A 1x1 GIF of 600 KB (its header says 1 pixel) is decoded in a thread, not on the loop."""
    from digitlab.server import routes
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    comment = b"!\xfe" + (b"\xff" + b"x" * 255) * 2400 + b"\0"
    gif = head + comment + b",\0\0\0\0\x01\0\x01\0\0\x02\x02\x44\x01\0;"
    assert len(gif) > routes.INLINE_MAX_BYTES
    r = client.post("/api/predict", content=gif, headers={"content-type": "image/gif"})
    assert r.status_code == 200, r.text
    assert len(hops) == 1


@pytest.mark.parametrize("path", ["/api/health", "/api/model", "/", "/docs", "/openapi.json",
                                  "/static/app.js"])
def test_head_works_wherever_get_does(client, path):
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_head_where_get_is_not_allowed_is_405(client):
    assert client.head("/api/predict").status_code == 405
    assert client.head("/api/nothing").status_code == 404
