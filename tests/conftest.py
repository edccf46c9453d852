"""Shared fixtures and helpers: the bundled MNIST (loaded once), a small trained model directory,
the one renderer of a digit on paper and the one image encoder, hostile files, a free port and a
uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

from hypothesis import HealthCheck, settings
from PIL import Image

from digitlab.data import load_dataset, write_idx
from digitlab.config import TrainConfig
from digitlab.training import train


# Hypothesis profiles for the fuzzing suite (tests/test_fuzz.py): "short" runs in `make test`
# (derandomised: the same examples every run, a few seconds a property); "long" explores
# afresh, 2,000 examples a property: `DIGITLAB_FUZZ=long pytest tests/test_fuzz.py` or
# `pytest tests/test_fuzz.py --hypothesis-profile long`.
_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
settings.register_profile("short", max_examples=60, derandomize=True, database=None, **_FUZZ)
settings.register_profile("long", max_examples=2000, **_FUZZ)
settings.load_profile(os.environ.get("DIGITLAB_FUZZ", "short"))


@pytest.fixture(scope="session")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, mnist):
    """An mlp100 trained for one quick epoch on 10,000 images (~1 s); ~93% accurate."""
    out = tmp_path_factory.mktemp("models") / "mlp100"
    train(TrainConfig(model="mlp100", epochs=1, subset=10_000, seed=0), out=out, dataset=mnist,
          evaluate_test=False)
    return out


def on_paper(d28: np.ndarray, size: int | tuple[int, int] = 240, paper=(255, 255, 255),
             pen=(0, 0, 0), frac: float = 0.6, offset=(0, 0), *, digit_px: int | None = None,
             at: tuple[int, int] | None = None) -> Image.Image:
    """An MNIST digit (bright on dark) drawn in ``pen`` on ``paper`` (RGB), the way a user's image
    looks. ``size`` is the canvas's side or (width, height); the digit is upscaled smoothly to
    ``digit_px`` pixels (default: ``frac`` of the shorter side) and centred then moved by
    ``offset``, or placed with its top-left corner ``at``."""
    w, h = (size, size) if isinstance(size, int) else size
    side = digit_px or int(min(w, h) * frac)
    big = Image.fromarray(d28).resize((side, side), Image.Resampling.BICUBIC)
    m = np.asarray(big, np.float32)[:, :, None] / 255.0
    canvas = np.ones((h, w, 3), np.float32) * np.asarray(paper, np.float32)
    x, y = at or ((w - side) // 2 + offset[0], (h - side) // 2 + offset[1])
    region = canvas[y:y + side, x:x + side]
    canvas[y:y + side, x:x + side] = region * (1 - m) + np.asarray(pen, np.float32) * m
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    """The bytes of ``img`` saved as ``fmt`` (Pillow's save options in ``kw``)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_idx_dir(path, n_train=60, n_test=20, n_classes=10, seed=0, gz=True):
    """Write a small random MNIST-format dataset; returns its folder."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(path / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(path / f"{prefix}-labels-idx1-ubyte{ext}",
                  (np.arange(n) % n_classes).astype(np.uint8))
    return path


def many_frame_gif(frames: int) -> bytes:
    """A 1x1 GIF of ``frames`` frames (15 bytes each): a 5 MB file is 300,000 frames."""
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b",\0\0\0\0\x01\0\x01\0\0" + b"\x02\x02\x44\x01\0"
    return head + frame * frames + b";"


def fragmented_gif(blocks: int) -> bytes:
    """A 1x1 one-frame GIF whose comment is split into ``blocks`` one-byte sub-blocks."""
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    comment = b"!\xfe" + b"\x01x" * blocks + b"\0"
    frame = b",\0\0\0\0\x01\0\x01\0\0\x02\x02\x44\x01\0"
    return head + comment + frame + b";"


def hostile_text_png() -> bytes:
    """A PNG with a compressed text chunk that inflates past Pillow's text limit."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    ztxt = b"k\0\0" + zlib.compress(b"a" * 4_000_000, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"zTXt", ztxt)
            + chunk(b"IDAT", zlib.compress(b"\0" * 20)) + chunk(b"IEND", b""))


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError in the main thread if the block runs longer than ``seconds`` (for
    tests of things that used to hang: they fail instead of stopping the suite)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_in_thread(server):
    """Run a ``uvicorn.Server`` in a daemon thread until it has started; stop it on exit."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def serve_subprocess(logs, *args, env: dict | None = None, timeout: float = 60):
    """``digitlab serve ARGS`` in its own process on a free 127.0.0.1 port, its stdout and
    stderr in ``logs``/serve.out and serve.err. Yields (process, base URL) once /api/health
    answers; terminates the process at the end if it is still running."""
    import httpx

    port = free_port()
    with open(logs / "serve.out", "w") as out, open(logs / "serve.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "digitlab.cli", "serve", "--host",
                                 "127.0.0.1", "--port", str(port), *map(str, args)],
                                stdout=out, stderr=err,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, (logs / "serve.err").read_text()
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(30)


# Code that makes `import torch` fail in a child process (torch-free paths are tested that way).
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is blocked in this test", name="torch")
sys.meta_path.insert(0, NoTorch())
"""


@pytest.fixture
def ctrl_c_at_step(monkeypatch):
    """``ctrl_c_at_step(n)``: the n-th augmented batch of the next training run raises
    KeyboardInterrupt, as Ctrl-C in the middle of an epoch does."""
    from digitlab import training
    real = training.augment_batch

    def arm(n: int) -> None:
        calls = {"n": 0}

        def interrupted(x, level, gen):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(x, level, gen)
        monkeypatch.setattr(training, "augment_batch", interrupted)
    return arm
