"""Abuse test of ``digitlab serve`` on loopback: well-formed and malicious clients together.

Starts ``digitlab serve --workers 2`` on a free 127.0.0.1 port (never any other address) and runs
``--clients`` concurrent clients for ``--seconds`` after a ``--warmup``. Each client loops,
picking at random one kind of request from the table below, half of them well-formed, each on
its own connection, until the time is up or it has sent ``--max-requests``. A prober asks for
``/api/health`` every 50 ms meanwhile. Prints, per kind, the answers seen, then: 5xx answers,
well-formed requests that got no answer (reset, closed, timed out), ``/api/health`` latency
percentiles during the run, and the server's memory (RSS of the server and its workers) idle,
after the warm-up and at the end.

    python benchmarks/abuse.py                      # 32 clients, 30 s, 2 workers
    python benchmarks/abuse.py --seconds 10 --clients 8

The malicious kinds are the attacks of issue 15, each answered 4xx (or a closed connection, for
headers that never end): a 4 MB JSON batch of a million items, JSON nested 100,000 deep, an
8 MB body sent whole before reading (as urllib does), a body that stops after 10 bytes, headers
that never end, an EPS file, a GIF of 300,000 frames, a 1x1 GIF of 600 KB, a PNG header claiming
400 million pixels, a PNG with a text chunk that inflates past Pillow's limit, random bytes,
a multipart body of 5,000 parts, a batch of 40 images, a file name that is not UTF-8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import digit_png, free_port, rss_kib, stop, wait_ready  # noqa: E402


def request(method: str, path: str, body: bytes = b"", ctype: str | None = None,
            length: int | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    if method == "POST":
        head += f"Content-Length: {len(body) if length is None else length}\r\n"
    return head.encode() + b"\r\n" + body


def multipart(parts: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "abuse-boundary-7d1f"
    out = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{fname}"'
        f"\r\nContent-Type: {kind}\r\n\r\n".encode("utf-8", "surrogateescape") + data + b"\r\n"
        for name, fname, data, kind in parts) + f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def kinds() -> dict[str, tuple[bool, bytes, set, float]]:
    """name -> (well-formed?, the bytes to send, statuses expected, seconds to wait after)."""
    import base64
    import io

    from PIL import Image

    png = digit_png()
    b64 = "data:image/png;base64," + base64.b64encode(png).decode()
    gif_head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    gif_frame = b",\0\0\0\0\x01\0\x01\0\0\x02\x02\x44\x01\0"
    eps = io.BytesIO()
    Image.new("L", (16, 16), 255).save(eps, "EPS")
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    ztxt = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 4_000_000, 9))
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 20)) + png_chunk(b"IEND", b""))
    bomb = (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
    rng = random.Random(0)
    k: dict[str, tuple[bool, bytes, set, float]] = {}
    body, ct = multipart([("file", "d.png", png, "image/png")])
    k["multipart"] = (True, request("POST", "/api/predict", body, ct), {200}, 0)
    k["raw"] = (True, request("POST", "/api/predict", png, "image/png"), {200}, 0)
    k["json"] = (True, request("POST", "/api/predict", json.dumps({"image": b64}).encode(),
                               "application/json"), {200}, 0)
    body, ct = multipart([("files", f"{i}.png", png, "image/png") for i in range(4)])
    k["batch"] = (True, request("POST", "/api/predict/batch", body, ct), {200}, 0)
    k["head-health"] = (True, request("HEAD", "/api/health"), {200}, 0)
    k["model-info"] = (True, request("GET", "/api/model"), {200}, 0)
    body, ct = multipart([("file", "b\udcff.png", png, "image/png")])
    k["name-not-utf8"] = (True, request("POST", "/api/predict", body, ct), {200}, 0)
    million = ('{"images":[' + ",".join(['"A"'] * 1_000_000) + "]}").encode()
    k["json-million"] = (False, request("POST", "/api/predict/batch", million,
                                        "application/json"), {413}, 0)
    k["json-deep"] = (False, request("POST", "/api/predict", b"[" * 100_000 + b"]" * 100_000,
                                     "application/json"), {400}, 0)
    k["8MB-whole"] = (False, request("POST", "/api/predict", b"\0" * 8_000_000, "image/png"),
                      {413}, 0)
    k["body-stops"] = (False, request("POST", "/api/predict", b"\0" * 10, "image/png",
                                      length=1000), {408}, 0)
    k["headers-never-end"] = (False, b"POST /api/predict HTTP/1.1\r\nHost: x\r\n", {None}, 0)
    k["eps"] = (False, request("POST", "/api/predict", eps.getvalue(), "image/png"), {400}, 0)
    k["gif-300k-frames"] = (False, request("POST", "/api/predict",
                                           gif_head + gif_frame * 300_000 + b";", "image/gif"),
                            {413}, 0)
    big_gif = gif_head + b"!\xfe" + (b"\xff" + b"x" * 255) * 2400 + b"\0" + gif_frame + b";"
    k["gif-1x1-600KB"] = (False, request("POST", "/api/predict", big_gif, "image/gif"), {200}, 0)
    k["bomb-header"] = (False, request("POST", "/api/predict", bomb, "image/png"), {413}, 0)
    k["png-ztxt"] = (False, request("POST", "/api/predict", ztxt, "image/png"), {400}, 0)
    k["random-bytes"] = (False, request("POST", "/api/predict", rng.randbytes(3000),
                                        "image/png"), {400}, 0)
    body, ct = multipart([("files", f"{i}", b"x", "image/png") for i in range(5000)])
    k["multipart-5000"] = (False, request("POST", "/api/predict/batch", body, ct), {413}, 0)
    body, ct = multipart([("files", f"{i}.png", png, "image/png") for i in range(40)])
    k["batch-40"] = (False, request("POST", "/api/predict/batch", body, ct), {413}, 0)
    return k


# Slow attacks hold a client for their timeout (10-15 s): drawn less often than the others.
WEIGHTS = {"body-stops": 0.1, "headers-never-end": 0.1}


async def exchange(port: int, payload: bytes, timeout: float) -> int | None | str:
    """Send, read until the server closes: the status, None if closed without an answer, or
    the name of the error."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, asyncio.TimeoutError) as exc:
        return type(exc).__name__
    try:
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        return type(exc).__name__
    finally:
        writer.close()


async def run(port: int, table: dict, clients: int, seconds: float, max_requests: int,
              timeout: float) -> dict:
    names = sorted(table)
    weights = [WEIGHTS.get(n, 1.0) for n in names]
    seen: dict[str, dict] = {n: {} for n in names}
    health: list[float] = []
    health_failures = 0
    stop = time.monotonic() + seconds

    async def client(i: int):
        rng = random.Random(i)
        for _ in range(max_requests):
            if time.monotonic() >= stop:
                return
            name = rng.choices(names, weights)[0]
            result = await exchange(port, table[name][1], timeout)
            seen[name][result] = seen[name].get(result, 0) + 1

    async def prober():
        nonlocal health_failures
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            result = await exchange(port, request("GET", "/api/health"), 10)
            if result == 200:
                health.append(time.perf_counter() - t0)
            else:
                health_failures += 1
            await asyncio.sleep(0.05)

    await asyncio.gather(prober(), *(client(i) for i in range(clients)))
    return {"seen": seen, "health": health, "health_failures": health_failures}


def peak_probe(port: int, pid: int, payload: bytes, repeats: int = 5) -> tuple[float, float]:
    """Time to the answer (s) and the most any server process's peak RSS rose above its RSS
    just before (MiB), for one request sent alone, best of ``repeats``."""
    from load import process_tree

    def status(p: int, key: str) -> int:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        return 0

    times, extras = [], []
    for _ in range(repeats):
        pids = process_tree(pid)
        for p in pids:
            Path(f"/proc/{p}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        before = {p: status(p, "VmRSS:") for p in pids}
        t0 = time.perf_counter()
        asyncio.run(exchange(port, payload, 30))
        times.append(time.perf_counter() - t0)
        extras.append(max(status(p, "VmHWM:") - before[p] for p in pids) / 1024)
    return min(times), max(extras)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of the same mix first")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-requests", type=int, default=5000, help="per client")
    ap.add_argument("--timeout", type=float, default=40.0, help="seconds for one answer")
    args = ap.parse_args(argv)

    table = kinds()
    port = free_port()
    cmd = [sys.executable, "-m", "digitlab.cli", "serve", "--host", "127.0.0.1", "--port",
           str(port), "--workers", str(args.workers), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, proc)
        time.sleep(0.5)
        rss_idle = rss_kib(proc.pid)
        probe = peak_probe(port, proc.pid, table["json-million"][1])
        asyncio.run(run(port, table, args.clients, args.warmup, args.max_requests, args.timeout))
        rss_warm = rss_kib(proc.pid)
        res = asyncio.run(run(port, table, args.clients, args.seconds, args.max_requests,
                              args.timeout))
        rss_end = rss_kib(proc.pid)
        alive = proc.poll() is None
    finally:
        stop(proc)

    print(f"{args.clients} clients, {args.seconds:g} s after a {args.warmup:g} s warm-up, "
          f"digitlab serve --workers {args.workers} on 127.0.0.1\n")
    print("| kind | well-formed | requests | answers |")
    print("| --- | --- | ---: | --- |")
    five, dropped, unexpected = 0, 0, 0
    for name, (good, _, expected, _) in table.items():
        answers = res["seen"][name]
        n = sum(answers.values())
        five += sum(c for s, c in answers.items() if isinstance(s, int) and s >= 500)
        if good:
            dropped += sum(c for s, c in answers.items() if not isinstance(s, int))
        unexpected += sum(c for s, c in answers.items() if s not in expected)
        text = ", ".join(f"{s}: {c}" for s, c in sorted(answers.items(), key=str))
        print(f"| {name} | {'yes' if good else 'no'} | {n} | {text or '-'} |")
    h = res["health"]
    print()
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| requests | {sum(sum(a.values()) for a in res['seen'].values())} |")
    print(f"| 5xx answers | {five} |")
    print(f"| well-formed requests reset or unanswered | {dropped} |")
    print(f"| answers other than the expected one | {unexpected} |")
    print(f"| /api/health p50 / p99 / max | {1000 * percentile(h, 0.5):.1f} / "
          f"{1000 * percentile(h, 0.99):.1f} / {1000 * max(h, default=float('nan')):.1f} ms "
          f"({len(h)} probes, {res['health_failures']} failed) |")
    print(f"| RSS idle -> after warm-up -> end | {rss_idle / 1024:.0f} -> {rss_warm / 1024:.0f} "
          f"-> {rss_end / 1024:.0f} MiB ({100 * (rss_end - rss_warm) / rss_warm:+.1f}%) |")
    print(f"| server alive at the end | {'yes' if alive else 'NO'} |")
    print(f"| 4 MB JSON batch of a million items, alone: time to its 413 (best of 5), "
          f"peak RSS above the worker's RSS before it (worst of 5) | {1000 * probe[0]:.1f} ms, "
          f"{probe[1]:.1f} MiB |")
    return 0 if alive and five == 0 and dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
