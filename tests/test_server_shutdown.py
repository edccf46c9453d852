"""SIGTERM stops `digitlab serve` gracefully: it stops listening, lets the requests in flight
finish (within --graceful-timeout), then exits 0."""

from __future__ import annotations

import io
import json
import signal
import socket
import time

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from conftest import serve_subprocess

BOUNDARY = "digitlab-shutdown-test"
HELD_BACK = 20  # bytes of each body kept until after SIGTERM


@pytest.fixture(scope="module")
def batch_body(mnist) -> bytes:
    """A multipart body of four 100x100 MNIST digits, as /api/predict/batch takes it."""
    parts = []
    for i in range(4):
        img = Image.fromarray(255 - mnist.test_images[i].numpy()).resize((100, 100))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
                     f'filename="{i}.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
                     + buf.getvalue() + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def start_upload(port: int, body: bytes, request_id: str) -> socket.socket:
    """A batch request whose headers and body, all but its last bytes, are sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /api/predict/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n\r\n").encode()
    sock.sendall(head + body[:-HELD_BACK])
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """Status, headers and body of the one response on ``sock`` (read until the server closes)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def in_progress(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == "digitlab_http_requests_in_progress":
            return family.samples[0].value
    raise AssertionError("no digitlab_http_requests_in_progress in /metrics")


def wait_in_flight(base: str, n: int) -> None:
    """Until ``n`` requests are in the app (the /metrics request asking is one more)."""
    deadline = time.monotonic() + 30
    while in_progress(base) < n + 1:
        assert time.monotonic() < deadline, "the uploads never reached the app"
        time.sleep(0.05)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_requests_in_flight_then_exits_0(small_model_dir, batch_body, tmp_path):
    n = 4
    with serve_subprocess(tmp_path, "--model-dir", small_model_dir, "--access-log",
                          "--log-format", "json", "--graceful-timeout", 30) as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        uploads = [start_upload(port, batch_body, f"inflight-{i}") for i in range(n)]
        wait_in_flight(base, n)

        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not refused(port):  # no new connections, while the uploads are still open
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        assert proc.poll() is None  # waiting for the requests in flight

        for sock in uploads:
            sock.sendall(batch_body[-HELD_BACK:])
        answers = [read_response(sock) for sock in uploads]
        for sock in uploads:
            sock.close()
        assert proc.wait(30) == 0
    for i, (status, headers, body) in enumerate(answers):
        assert status == 200, body
        assert headers["x-request-id"] == f"inflight-{i}"
        results = json.loads(body)["results"]
        assert len(results) == 4 and all(r["ok"] for r in results)
    assert refused(port)

    access = [json.loads(line) for line in (tmp_path / "serve.out").read_text().splitlines()]
    done = {a["request_id"]: a["status"] for a in access if a["path"] == "/api/predict/batch"}
    assert done == {f"inflight-{i}": 200 for i in range(n)}
    err = (tmp_path / "serve.err").read_text()
    assert "Cancel" not in err and "Traceback" not in err


def test_graceful_timeout_bounds_the_wait(small_model_dir, batch_body, tmp_path):
    """A request that never completes holds the shutdown for --graceful-timeout, not longer."""
    with serve_subprocess(tmp_path, "--model-dir", small_model_dir,
                          "--graceful-timeout", 1) as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        stuck = start_upload(port, batch_body, "stuck")
        wait_in_flight(base, 1)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        took = time.monotonic() - start
        stuck.close()
    # 1 s of grace, then the cancelled request, the app's shutdown and the interpreter's exit;
    # the body's own idle timeout (15 s) and the default grace (10 s) would be far longer.
    assert 1.0 <= took < 8.0, took
    assert "timeout graceful shutdown exceeded" in (tmp_path / "serve.err").read_text()
