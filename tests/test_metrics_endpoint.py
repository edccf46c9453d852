"""Observability: GET /metrics (one process and --workers 2), X-Request-ID, the access log."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import signal
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from conftest import serve_subprocess
from digitlab.server import Settings, create_app
from digitlab.server.telemetry import JsonFormatter, rejection_reason

PNG = {"content-type": "image/png"}


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digit_pngs(mnist):
    """Five MNIST test digits as ink on paper, 100x100."""
    return [png(np.asarray(Image.fromarray(255 - mnist.test_images[i].numpy())
                           .resize((100, 100), Image.BILINEAR))) for i in range(5)]


def samples(text: str) -> dict:
    """Exposition text -> {(sample name, sorted label items): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_label(found: dict, name: str, label: str) -> dict:
    return {dict(k[1])[label]: v for k, v in found.items() if k[0] == name}


def test_metrics_count_requests_predictions_and_rejections(small_model_dir, digit_pngs):
    with TestClient(create_app(small_model_dir)) as c:
        answers = [c.post("/api/predict", content=d, headers=PNG).json() for d in digit_pngs[:3]]
        blank = c.post("/api/predict", content=png(np.full((60, 60), 255, np.uint8)), headers=PNG)
        batch = c.post("/api/predict/batch", files=[
            ("files", ("a.png", digit_pngs[3], "image/png")),
            ("files", ("b.png", digit_pngs[4], "image/png")),
            ("files", ("bad.png", b"\x89PNG\r\n\x1a\nbroken", "image/png"))]).json()
        assert c.post("/api/predict", content=b"hello", headers={"content-type": "text/plain"}
                      ).status_code == 415
        for path in ("/nope/1", "/nope/2", "/.env"):
            assert c.get(path).status_code == 404
        assert c.head("/api/health").status_code == 200
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found = samples(r.text)

    requests = {(dict(k[1])["endpoint"], dict(k[1])["status"]): v for k, v in found.items()
                if k[0] == "digitlab_http_requests_total"}
    assert requests == {("/api/predict", "200"): 4, ("/api/predict", "415"): 1,
                        ("/api/predict/batch", "200"): 1, ("unmatched", "404"): 3,
                        ("/api/health", "200"): 1}  # /metrics counts itself after answering
    counts = by_label(found, "digitlab_http_request_duration_seconds_count", "endpoint")
    assert counts["/api/predict"] == 5 and counts["unmatched"] == 3

    # Predictions by class and rejections by reason, as the answers say.
    results = answers + [x["result"] for x in batch["results"] if x["ok"]]
    expected: dict = {}
    for a in results:
        if not a["rejected"]:
            expected[a["label"]] = expected.get(a["label"], 0) + 1
    assert by_label(found, "digitlab_predictions_total", "digit") == expected
    assert sum(expected.values()) >= 4  # a 93% model reads at least four of five clean digits
    rejected = [rejection_reason(a["reason"]) for a in results if a["rejected"]]
    assert blank.json()["rejected"] and rejection_reason(blank.json()["reason"]) == "blank"
    rejections = by_label(found, "digitlab_rejections_total", "reason")
    assert sum(rejections.values()) == len(rejected) + 1 and rejections["blank"] >= 1

    weights = hashlib.sha256((small_model_dir / "model.safetensors").read_bytes()).hexdigest()
    info = [dict(k[1]) for k, v in found.items() if k[0] == "digitlab_model_info" and v == 1]
    assert info == [{"model_id": weights, "architecture": "mlp100", "kind": "single",
                     "backend": "torch"}]


def test_rejection_reasons_are_a_few_labels():
    assert rejection_reason("low confidence (0.31 < 0.45): not clearly a digit") == "low_confidence"
    assert rejection_reason("blank: no ink on the page") == "blank"
    assert rejection_reason("noise: 12 scattered specks and no main stroke") == "noise"
    assert rejection_reason("a horizontal line, not a digit") == "not_a_digit"
    assert rejection_reason(None) == "not_a_digit"


def test_request_id(small_model_dir, digit_pngs, monkeypatch):
    with TestClient(create_app(small_model_dir), raise_server_exceptions=False) as c:
        r = c.get("/api/health", headers={"X-Request-ID": "trace-7f3a.9:b"})
        assert r.headers["x-request-id"] == "trace-7f3a.9:b"
        a, b = c.get("/api/health"), c.get("/api/health")
        assert re.fullmatch(r"[0-9a-f]{32}", a.headers["x-request-id"])
        assert a.headers["x-request-id"] != b.headers["x-request-id"]
        for bad in ("two words", "x" * 129, "id\x01", "ünïcode".encode()):
            got = c.get("/api/health", headers={"X-Request-ID": bad}).headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", got), bad
        # on every answer: a 404, a 413 from the body limit middleware, a 500
        assert c.get("/nope", headers={"X-Request-ID": "r404"}).headers["x-request-id"] == "r404"
        big = c.post("/api/predict", content=b"\0" * 8_000_000,
                     headers={**PNG, "X-Request-ID": "r413"})
        assert big.status_code == 413 and big.headers["x-request-id"] == "r413"
        monkeypatch.setattr(c.app.state.served.predictor, "predict_one",
                            lambda *a, **k: 1 / 0)
        boom = c.post("/api/predict", content=digit_pngs[0], headers={**PNG, "X-Request-ID": "r500"})
        assert boom.status_code == 500 and boom.headers["x-request-id"] == "r500"
        assert boom.json() == {"detail": "internal error: ZeroDivisionError"}


@pytest.fixture
def access_lines():
    """JSON access-log lines written while the test runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("digitlab.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_access_log_as_json(small_model_dir, digit_pngs, access_lines):
    with TestClient(create_app(small_model_dir, Settings(access_log=True))) as c:
        c.post("/api/predict?top_k=2&include=input", content=digit_pngs[0],
               headers={**PNG, "X-Request-ID": "abc-123"})
        c.head("/api/health")
        c.get("/a%0Ab")  # a newline in the path must not break the line
    first, head, odd = access_lines()
    assert first["request_id"] == "abc-123" and first["method"] == "POST"
    assert first["path"] == "/api/predict" and first["status"] == 200  # no query string
    assert first["level"] == "info" and first["logger"] == "digitlab.access"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "abc-123" in first["message"] and "top_k" not in first["message"]
    assert head["method"] == "HEAD" and head["path"] == "/api/health" and head["status"] == 200
    assert odd["status"] == 404 and "\n" not in odd["message"] and odd["path"] == "/a\\nb"


def test_access_log_off_by_default(small_model_dir, access_lines):
    with TestClient(create_app(small_model_dir)) as c:
        c.get("/api/health")
    assert access_lines() == []


def test_metrics_add_up_over_worker_processes(small_model_dir, digit_pngs, tmp_path):
    """--workers 2: every scrape, whichever worker answers it, counts every worker's requests;
    the shared folder lives in TMPDIR while the server runs and is removed when it stops."""
    with serve_subprocess(tmp_path, "--model-dir", small_model_dir, "--workers", 2,
                          "--log-format", "json", env={"TMPDIR": str(tmp_path)}) as (proc, base):
        (folder,) = tmp_path.glob("digitlab-metrics-*")
        deadline = time.monotonic() + 120
        # Both workers up (each has set its model gauge): one may start much later than the
        # other on a busy machine, and would then see no connection at all.
        while len(list(folder.glob("gauge_livemax_*.db"))) < 2:
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.2)
        # New connections until both workers have answered predictions (counter files by pid).
        sent = 0
        while len({p.stem.rsplit("_", 1)[1] for p in folder.glob("counter_*.db")}) < 2:
            assert time.monotonic() < deadline, "one worker took every connection"
            r = httpx.post(base + "/api/predict", content=digit_pngs[sent % 5], headers=PNG)
            assert r.status_code == 200
            sent += 1
            assert list(folder.glob("counter_*.db")), "workers keep their metrics to themselves"
        for _ in range(6):
            found = samples(httpx.get(base + "/metrics").text)
            assert found[("digitlab_http_requests_total",
                          (("endpoint", "/api/predict"), ("status", "200")))] == sent
            digits = sum(by_label(found, "digitlab_predictions_total", "digit").values())
            rejected = sum(by_label(found, "digitlab_rejections_total", "reason").values())
            assert digits + rejected == sent
            info = [k for k, v in found.items() if k[0] == "digitlab_model_info"]
            assert len(info) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not folder.exists()
    for line in (tmp_path / "serve.err").read_text().splitlines():
        assert line.startswith("{") and json.loads(line), line  # --log-format json
