"""The service on a real socket (uvicorn as ``digitlab serve`` runs it, in a thread): what only
shows on the wire. Oversized bodies answered 413 so that every client reads it, read timeouts
for headers and bodies, HEAD."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
import urllib.error
import urllib.request

import pytest
import uvicorn

from conftest import free_port, server_in_thread
from digitlab.server import Limits, Settings, create_app
from digitlab.server.protocol import GuardedHttpToolsProtocol, uvicorn_options

LIMITS = Limits(max_upload_bytes=20_000, max_batch_bytes=60_000, max_pixels=250_000, max_batch=4,
                body_timeout=3.0, body_idle_timeout=1.0)


class QuickHeaders(GuardedHttpToolsProtocol):
    header_timeout = 1.0


@contextlib.contextmanager
def serving(model_dir, limits: Limits):
    """(host, port) of a server running in a thread, with a 1 s header timeout."""
    port = free_port()
    app = create_app(model_dir, Settings(limits=limits))
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options("127.0.0.1", port, "warning",
                                                                  protocol=QuickHeaders)))
    with server_in_thread(server):
        yield "127.0.0.1", port


@pytest.fixture(scope="module")
def live(small_model_dir):
    """A server with small limits."""
    with serving(small_model_dir, LIMITS) as address:
        yield address


@pytest.fixture(scope="module")
def live_default_sizes(small_model_dir):
    """A server with the default size limits (and short timeouts)."""
    with serving(small_model_dir, Limits(body_timeout=10.0, body_idle_timeout=2.0)) as address:
        yield address


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; and how long that took."""
    sock.settimeout(limit)
    start, data = time.monotonic(), b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def test_oversized_body_413_is_readable_by_urllib(live):
    """Issue 15: urllib sends its whole body before it reads; it got a reset, not the 413."""
    host, port = live
    req = urllib.request.Request(f"http://{host}:{port}/api/predict", data=b"\0" * 8_000_000,
                                 headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 413
    assert "over the limit" in json.loads(info.value.read())["detail"]
    # the server is fine and answers the next client
    with urllib.request.urlopen(f"http://{host}:{port}/api/health", timeout=10) as r:
        assert r.status == 200


@pytest.mark.parametrize("case", ["too-many-parts", "unsupported-type"])
def test_answers_given_before_the_body_is_read_are_readable_by_urllib(live_default_sizes, case):
    """A 413 for too many multipart parts (the 33rd of 40), a 415 from the headers: the rest of
    the 8 MB body is read first, so urllib (which sends it all before reading) gets the answer,
    not a reset."""
    host, port = live_default_sizes
    if case == "too-many-parts":
        b = "b0undary"
        part = b"x" * 200_000
        body = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{i}"'
                        f'\r\nContent-Type: image/png\r\n\r\n'.encode() + part + b"\r\n"
                        for i in range(40)) + f"--{b}--\r\n".encode()
        kind, path, status = f"multipart/form-data; boundary={b}", "/api/predict/batch", 413
    else:
        body, kind, path, status = b"7" * 6_000_000, "text/plain", "/api/predict", 415
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=body,
                                 headers={"Content-Type": kind})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == status


def test_oversized_chunked_body_413_is_readable(live):
    host, port = live
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", "/api/predict", body=(b"\0" * 65536 for _ in range(64)),
                 headers={"Content-Type": "image/png"}, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "over the limit" in json.loads(r.read())["detail"]
    conn.close()


def test_expect_100_continue_gets_the_413_before_sending(live):
    with socket.create_connection(live) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 8000000\r\nExpect: 100-continue\r\n\r\n")
        data, took = read_until_closed(s, 5)
    assert data.startswith(b"HTTP/1.1 413") and took < 2


def test_a_body_that_stops_arriving_gets_408(live):
    """Issue 15: Content-Length 1000, 10 bytes sent, then nothing: no answer after 150 s."""
    with socket.create_connection(live) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 1000\r\n\r\n" + b"\0" * 10)
        data, took = read_until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"not received in time" in data and 0.8 < took < 3


def test_a_body_sent_too_slowly_gets_408(live):
    with socket.create_connection(live) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 1000\r\n\r\n")
        start = time.monotonic()
        s.settimeout(10)
        try:
            while time.monotonic() - start < 8:  # a byte every 0.5 s: never idle for 1 s
                s.sendall(b"\0")
                time.sleep(0.5)
        except OSError:  # closed by the server
            pass
        data, _ = read_until_closed(s, 10)
        took = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408") and took < 5  # the 3 s body_timeout


@pytest.mark.parametrize("sent", [b"", b"GET /api/health HTTP/1.1\r\nHost: x\r\n"])
def test_headers_must_arrive_in_time(live, sent):
    with socket.create_connection(live) as s:
        s.sendall(sent)
        _, took = read_until_closed(s, 10)
    assert took < 3


def test_a_kept_alive_connection_still_works_and_head_has_no_body(live):
    conn = http.client.HTTPConnection(*live, timeout=10)
    for method in ("GET", "HEAD", "GET"):
        conn.request(method, "/api/health")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200
        assert (body == b"") == (method == "HEAD")
        assert int(r.headers["content-length"]) > 0
    conn.close()


def test_a_graceful_stop_answers_a_request_that_was_on_its_way(small_model_dir):
    """CI, stop 29: while uvicorn replaced a worker, a client's new connection was closed with
    no answer. The stopping worker had accepted it, then closed every connection between
    requests before the request arrived. Now a request that arrives within the grace is
    answered (Connection: close), and a connection that stays idle is closed after it."""
    port = free_port()
    app = create_app(small_model_dir, Settings(limits=LIMITS))
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options("127.0.0.1", port, "warning")))
    with server_in_thread(server):
        fresh = socket.create_connection(("127.0.0.1", port))
        idle = socket.create_connection(("127.0.0.1", port))
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        kept.request("GET", "/api/health")
        assert kept.getresponse().read()
        deadline = time.monotonic() + 10
        while len(server.server_state.connections) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.should_exit = True
        while any(s.is_serving() for s in server.servers):  # the stop has begun
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.05)
        with fresh, idle:
            fresh.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            data, _ = read_until_closed(fresh, 10)
            assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data.lower()
            kept.request("GET", "/api/health")  # a kept-alive connection's next request
            r = kept.getresponse()
            assert r.status == 200 and r.headers["connection"] == "close"
            kept.close()
            data, took = read_until_closed(idle, 10)
            assert data == b"" and took < 5  # closed after the grace, not the header timeout
