"""The feedback and admin endpoints: POST /api/feedback with /api/predict's limits, a rate limit
and label checks; stats; DELETE with the admin token; swapping the model through
POST /api/admin/reload and SIGHUP while clients keep asking; several uvicorn workers writing
feedback at once and replaced one by one."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from conftest import free_port, server_in_thread
from digitlab.artifacts import default_model_dir
from digitlab.feedback import open_store
from digitlab.server import Limits, Settings, create_app

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = Limits(max_upload_bytes=60_000, max_pixels=400_000)


def png_bytes(img: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    img = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def canvas_png(img28: np.ndarray, size: int = 280) -> bytes:
    """An MNIST digit as the page's canvas sends it: dark ink on white, size x size."""
    return png_bytes(Image.fromarray(255 - img28).resize((size, size), Image.BILINEAR))


@pytest.fixture(scope="module")
def digits(mnist):
    return [(canvas_png(mnist.test_images[i].numpy()), int(mnist.test_labels[i]))
            for i in range(6)]


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    """A copy of the shipped model: other weights than small_model_dir's, so another id."""
    target = tmp_path_factory.mktemp("other") / "shipped"
    shutil.copytree(default_model_dir(), target)
    return target


def make_client(model_dir, db, **kw):
    settings = Settings(feedback_db=str(db), admin_token=TOKEN, limits=LIMITS, **kw)
    return TestClient(create_app(model_dir, settings))


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return tmp_path_factory.mktemp("fb") / "feedback.db"


@pytest.fixture(scope="module")
def client(small_model_dir, db):
    with make_client(small_model_dir, db, feedback_rate=6000, feedback_burst=1000) as c:
        yield c


def post(client, image: bytes, label="3", name="d.png", kind="image/png", **fields):
    data = {"label": label, **fields} if label is not None else fields
    return client.post("/api/feedback", files={"file": (name, image, kind)}, data=data)


def assert_error(r, status: int, *words: str):
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    for w in words:
        assert w.lower() in detail.lower(), detail


# ---- storing ------------------------------------------------------------------------------------

def test_feedback_is_stored_as_predicted(client, db, digits):
    image, truth = digits[0]
    predicted = client.post("/api/predict?include=input",
                            files={"file": ("d.png", image, "image/png")}).json()
    model_id = client.get("/api/model").json()["weights_sha256"]
    assert client.get("/api/health").json()["feedback"] is True

    r = post(client, image, label=str(truth))
    assert r.status_code == 201, r.text
    body = r.json()
    # Without `predicted`, the row holds what the served model reads in this image.
    assert body["label"] == truth and body["predicted"] == predicted["digit"]
    assert body["model_id"] == model_id
    with open_store(db, create=False) as store:
        row = store.get(body["id"])
    assert row.image_png == image  # the canvas PNG, byte for byte
    seen = base64.b64decode(predicted["image"].split(",", 1)[1])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(row.input_png))),
                          np.asarray(Image.open(io.BytesIO(seen))))  # what /api/predict saw
    assert (row.label, row.predicted, row.model_id) == (truth, predicted["digit"], model_id)
    assert row.confidence == pytest.approx(predicted["confidence"])

    # The page says what it showed; a JPEG upload is stored as a PNG.
    jpeg = png_bytes(Image.open(io.BytesIO(digits[1][0])).convert("RGB"), "JPEG")
    r = post(client, jpeg, label="5", name="photo.jpg", kind="image/jpeg", predicted="2",
             confidence="0.375")
    assert r.status_code == 201, r.text
    with open_store(db, create=False) as store:
        row = store.get(r.json()["id"])
    assert (row.label, row.predicted, row.confidence) == (5, 2, 0.375)
    assert Image.open(io.BytesIO(row.image_png)).format == "PNG"


def test_feedback_limits_are_predicts(client):
    """The limits and checks of /api/predict: size, pixels, type, broken images."""
    noise = np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)
    assert_error(post(client, png_bytes(noise)), 413, "limit")                  # 60 KB
    assert_error(post(client, png_bytes(np.zeros((700, 700), np.uint8))), 413, "pixels")
    assert_error(post(client, b"hello", name="a.txt", kind="text/plain"), 415, "text/plain")
    assert_error(post(client, b"\x89PNG\r\n\x1a\nbroken"), 400)
    assert_error(client.post("/api/feedback", files={"label": (None, "3")}), 422, "file")
    assert_error(client.post("/api/feedback", data={"label": "3"}), 415, "multipart")
    assert_error(client.post("/api/feedback", json={"image": "x", "label": 3}), 415, "multipart")
    # No digit in the image: nothing to learn from, and nothing stored.
    assert_error(post(client, png_bytes(np.full((50, 50), 255, np.uint8))), 422, "no digit")


@pytest.mark.parametrize("fields, word", [
    ({"label": None}, "label"), ({"label": "x"}, "label"), ({"label": "10"}, "label"),
    ({"label": "-1"}, "label"), ({"label": "3.5"}, "label"), ({"label": ""}, "label"),
    ({"label": "3", "predicted": "12"}, "predicted"),
    ({"label": "3", "confidence": "nan"}, "confidence"),
    ({"label": "3", "confidence": "1.5"}, "confidence"),
    ({"label": "3", "colour": "red"}, "colour"),
])
def test_bad_fields_are_422(client, digits, fields, word):
    assert_error(post(client, digits[0][0], **fields), 422, word)


def test_label_given_twice(client, digits):
    r = client.post("/api/feedback", files=[("file", ("d.png", digits[0][0], "image/png"))],
                    data={"label": ["3", "4"]})
    assert_error(r, 422, "twice")


def test_rate_limit(small_model_dir, tmp_path, digits):
    with make_client(small_model_dir, tmp_path / "f.db", feedback_rate=6, feedback_burst=2) as c:
        assert [post(c, digits[0][0]).status_code for _ in range(2)] == [201, 201]
        r = post(c, digits[0][0])
        assert_error(r, 429, "too many")
        assert 1 <= int(r.headers["Retry-After"]) <= 10  # one every 10 s
        # Another address has its own bucket.
        other = TestClient(c.app, client=("192.0.2.7", 5000))
        assert post(other, digits[0][0]).status_code == 201
        assert c.get("/api/feedback/stats").json()["total"] == 3


def test_stats(small_model_dir, tmp_path, digits):
    with make_client(small_model_dir, tmp_path / "f.db") as c:
        for (image, truth), predicted in zip(digits[:4], ("same", "other", "same", None)):
            extra = {}
            if predicted == "same":
                extra = {"predicted": str(truth)}
            elif predicted == "other":
                extra = {"predicted": str((truth + 1) % 10)}
            assert post(c, image, label=str(truth), **extra).status_code == 201
        stats = c.get("/api/feedback/stats").json()
    labels = [t for _, t in digits[:4]]
    assert stats["total"] == 4 and stats["right"] >= 2 and stats["wrong"] >= 1
    assert stats["right"] + stats["wrong"] + stats["rejected"] == 4
    assert sum(v["total"] for v in stats["by_label"].values()) == 4
    assert all(stats["by_label"][str(t)]["total"] == labels.count(t) for t in labels)


# ---- admin ----------------------------------------------------------------------------------------

def test_delete_needs_the_admin_token(client, db, digits, monkeypatch):
    import digitlab.server.admin as admin

    compared = []
    real = admin.hmac.compare_digest
    monkeypatch.setattr(admin.hmac, "compare_digest",
                        lambda a, b: compared.append((a, b)) or real(a, b))
    row = post(client, digits[2][0], label=str(digits[2][1])).json()["id"]

    r = client.delete(f"/api/feedback/{row}")
    assert_error(r, 401, "Authorization: Bearer")
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert_error(client.delete(f"/api/feedback/{row}", headers={"Authorization": "Basic eDp5"}),
                 401)
    assert_error(client.delete(f"/api/feedback/{row}",
                               headers={"Authorization": "Bearer " + TOKEN[:-1]}), 403, "wrong")
    assert_error(client.delete(f"/api/feedback/{row}",
                               headers={"Authorization": "Bearer " + TOKEN + "x"}), 403)
    # Compared in constant time, as bytes: the token's length or prefix tells nothing.
    assert compared == [(TOKEN[:-1].encode(), TOKEN.encode()),
                        ((TOKEN + "x").encode(), TOKEN.encode())]
    with open_store(db, create=False) as store:
        assert store.get(row) is not None

    assert client.delete(f"/api/feedback/{row}", headers=ADMIN).status_code == 204
    with open_store(db, create=False) as store:
        assert store.get(row) is None
    assert_error(client.delete(f"/api/feedback/{row}", headers=ADMIN), 404, f"id {row}")
    assert client.delete("/api/feedback/abc", headers=ADMIN).status_code == 422
    assert_error(client.delete("/api/feedback/abc"), 401)  # the token is checked first
    assert_error(client.post("/api/admin/reload"), 401)
    assert_error(client.post("/api/admin/reload", headers={"Authorization": "Bearer nope"}), 403)


def test_without_database_or_token(small_model_dir, digits):
    with TestClient(create_app(small_model_dir)) as c:
        assert c.get("/api/health").json()["feedback"] is False
        assert_error(post(c, digits[0][0]), 404, "--feedback-db")
        assert_error(c.get("/api/feedback/stats"), 404, "--feedback-db")
        assert_error(c.delete("/api/feedback/1", headers=ADMIN), 403, "--admin-token")
        assert_error(c.post("/api/admin/reload", headers=ADMIN), 403, "admin endpoints are off")


# ---- swapping the model ---------------------------------------------------------------------------

def test_reload(small_model_dir, other_model_dir, tmp_path, digits):
    serving = tmp_path / "serving"
    shutil.copytree(small_model_dir, serving)
    broken = tmp_path / "broken"
    shutil.copytree(small_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    with make_client(serving, tmp_path / "f.db") as c:
        first = c.get("/api/model").json()["weights_sha256"]

        r = c.post("/api/admin/reload", headers=ADMIN, json={"model_dir": str(other_model_dir)})
        assert r.status_code == 200, r.text
        new = c.get("/api/model").json()
        assert r.json() == {"model_dir": "shipped", "weights_sha256": new["weights_sha256"],
                            "previous_sha256": first, "changed": True}
        assert new["weights_sha256"] != first and new["architecture"] == "cnn"
        info = [line for line in c.get("/metrics").text.splitlines()
                 if line.startswith("digitlab_model_info{")]
        assert len(info) == 1 and new["weights_sha256"] in info[0]  # /metrics follows the swap
        assert f'backend="{new["backend"]}"' in info[0]
        # Feedback names the model that answered.
        assert post(c, digits[0][0]).json()["model_id"] == new["weights_sha256"]

        for bad, words in ((broken, ("broken", "weights")), (tmp_path / "none", ("not found",)),
                           (tmp_path / "f.db", ("f.db",))):
            r = c.post("/api/admin/reload", headers=ADMIN, json={"model_dir": str(bad)})
            assert_error(r, 400, *words)
            assert c.get("/api/model").json()["weights_sha256"] == new["weights_sha256"]
            assert c.post("/api/predict", files={"file": ("d.png", digits[0][0])}).status_code == 200
        assert_error(c.post("/api/admin/reload", headers=ADMIN, json={"model_dir": 3}), 422)
        r = c.post("/api/admin/reload", content=b"{",
                   headers={**ADMIN, "Content-Type": "application/json"})
        assert_error(r, 400, "JSON")

        # Without a body: the directory the server was started with, read again.
        r = c.post("/api/admin/reload", headers=ADMIN)
        assert r.json()["weights_sha256"] == first and r.json()["changed"] is True
        shutil.copy(other_model_dir / "model.safetensors", serving / "model.safetensors")
        shutil.copy(other_model_dir / "config.json", serving / "config.json")
        r = c.post("/api/admin/reload", headers=ADMIN)
        assert r.json()["weights_sha256"] == new["weights_sha256"]
        assert c.get("/api/model").json()["model_dir"] == "serving"


def test_reload_while_clients_ask(small_model_dir, other_model_dir, tmp_path, digits):
    """A real server, two clients predicting and reading /api/model without pause while the
    model is swapped back and forth and a bad directory is refused: no request fails, and
    every answer comes from one of the two models."""
    port = free_port()
    app = create_app(small_model_dir, Settings(admin_token=TOKEN))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    failures, ids, answers = [], set(), [0]

    def ask(n: int):
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                image = digits[n % len(digits)][0]
                r = http.post("/api/predict", files={"file": ("d.png", image, "image/png")})
                m = http.get("/api/model")
                if r.status_code != 200 or m.status_code != 200:
                    failures.append((r.status_code, m.status_code, r.text[:200]))
                else:
                    ids.add(m.json()["weights_sha256"])
                    answers[0] += 1
                n += 1

    with server_in_thread(server), httpx.Client(base_url=base, timeout=60) as admin:
        first = admin.get("/api/model").json()["weights_sha256"]
        clients = [threading.Thread(target=ask, args=(k,)) for k in range(2)]
        for t in clients:
            t.start()
        seen = [first]
        try:
            for target in (other_model_dir, small_model_dir, tmp_path / "missing",
                           other_model_dir):
                before = answers[0]
                r = admin.post("/api/admin/reload", headers=ADMIN, json={"model_dir": str(target)})
                if target.name == "missing":
                    assert r.status_code == 400 and "not found" in r.json()["detail"]
                else:
                    assert r.status_code == 200, r.text
                    seen.append(r.json()["weights_sha256"])
                deadline = time.monotonic() + 30
                while answers[0] < before + 5 and time.monotonic() < deadline:
                    time.sleep(0.05)  # let the clients ask the new model a few times
        finally:
            stop.set()
            for t in clients:
                t.join(30)
    assert failures == [], failures[:3]
    assert answers[0] >= 20
    assert ids <= set(seen) and len(set(seen)) == 2 and len(ids) == 2
    assert seen[-1] != first


def _serve(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "digitlab.cli", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def _wait_up(proc: subprocess.Popen, base: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not start")


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read()


def _wait_for(fn, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_sighup_reloads_model_dir(small_model_dir, other_model_dir, tmp_path):
    """`digitlab serve` (one process): SIGHUP re-reads --model-dir in place; a bad one is
    logged and the old model goes on serving."""
    serving = tmp_path / "serving"
    shutil.copytree(small_model_dir, serving)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(["--model-dir", str(serving), "--port", str(port), "--log-level", "info"])
    try:
        _wait_up(proc, base)
        first = httpx.get(base + "/api/model").json()["weights_sha256"]
        for name in ("model.safetensors", "config.json"):
            shutil.copy(other_model_dir / name, serving / name)
        proc.send_signal(signal.SIGHUP)
        second = _wait_for(lambda: (lambda s: s if s != first else None)(
            httpx.get(base + "/api/model").json()["weights_sha256"]))
        (serving / "model.safetensors").write_bytes(b"broken")
        proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        assert proc.poll() is None
        assert httpx.get(base + "/api/model").json()["weights_sha256"] == second
        assert httpx.get(base + "/api/health").json()["model_loaded"] is True
    finally:
        log = _stop(proc)
    assert "SIGHUP: kept the current model" in log, log


def test_workers_write_feedback_at_once_and_are_replaced(small_model_dir, other_model_dir,
                                                         tmp_path, digits):
    """`digitlab serve --workers 2 --feedback-db`: four clients send feedback for ~10 s
    (DIGITLAB_FEEDBACK_SOAK_S): every 201 is a row, no request fails. Then the admin endpoint
    asks for the new --model-dir: uvicorn replaces both workers one at a time while a client
    keeps asking, and every worker ends up serving the new model."""
    seconds = float(os.environ.get("DIGITLAB_FEEDBACK_SOAK_S", "10"))
    serving = tmp_path / "serving"
    shutil.copytree(small_model_dir, serving)
    db = tmp_path / "feedback.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(["--model-dir", str(serving), "--port", str(port), "--workers", "2",
                   "--feedback-db", str(db), "--feedback-rate", "100000",
                   "--feedback-burst", "10000", "--log-level", "info"],
                  env={"DIGITLAB_ADMIN_TOKEN": TOKEN})
    try:
        _wait_up(proc, base)
        first = httpx.get(base + "/api/model").json()["weights_sha256"]
        stored, failures, pids = [], [], set()
        deadline = time.monotonic() + seconds

        def send(k: int):
            with httpx.Client(base_url=base, timeout=60) as http:
                n = k
                while time.monotonic() < deadline:
                    image, truth = digits[n % len(digits)]
                    r = http.post("/api/feedback", files={"file": ("d.png", image, "image/png")},
                                  data={"label": str(truth)})
                    (stored.append(r.json()["id"]) if r.status_code == 201
                     else failures.append((r.status_code, r.text[:200])))
                    n += 1

        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)
        assert failures == [], failures[:3]
        assert len(stored) > 20 and len(set(stored)) == len(stored)
        with open_store(db, create=False) as store:
            with store.engine.connect() as conn:
                rows = {r[0] for r in conn.exec_driver_sql("SELECT id FROM feedback")}
        assert rows == set(stored)
        print(f"\n{len(stored)} feedback rows from 2 workers in {seconds:g} s")

        # Replace the workers: the new model is tried first, then uvicorn restarts them.
        for name in ("model.safetensors", "config.json"):
            shutil.copy(other_model_dir / name, serving / name)
        stop, polled, poll_failures = threading.Event(), [], []

        def poll():
            while not stop.is_set():
                try:
                    r = httpx.get(base + "/api/model", timeout=30)  # a new connection each time
                    polled.append(r.json()["weights_sha256"]) if r.status_code == 200 \
                        else poll_failures.append(r.status_code)
                except httpx.HTTPError as exc:
                    poll_failures.append(repr(exc))
                time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            r = httpx.post(base + "/api/admin/reload", headers=ADMIN, timeout=60)
            assert r.status_code == 202, r.text
            new = None

            def all_new():
                answers = {httpx.get(base + "/api/model", timeout=30).json()["weights_sha256"]
                           for _ in range(12)}
                return answers if answers != {first} and len(answers) == 1 else None
            new = _wait_for(all_new, 120).pop()
        finally:
            stop.set()
            poller.join(30)
        assert new != first
        assert poll_failures == [], poll_failures[:3]
        assert set(polled) <= {first, new}
    finally:
        log = _stop(proc)
        print(log[-4000:])  # shown when the test fails
    assert "Received SIGHUP, restarting processes" in log
