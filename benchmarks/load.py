"""Load test of ``digitlab serve`` on loopback: single-image POST /api/predict requests.

Starts the server in a subprocess on a free 127.0.0.1 port, then keeps ``--concurrency``
keep-alive connections busy with a 100x100 PNG (an MNIST test digit drawn dark on white) for
``--seconds`` or ``--max-requests``, whichever comes first. Prints requests/s, latency
percentiles, errors and the server's memory (RSS of the server and its workers) idle, after a
warm-up, and at the end.

    python benchmarks/load.py                       # 16 connections, 30 s, 1 worker
    python benchmarks/load.py --workers 2 --form raw --seconds 10
    python benchmarks/load.py --workers 2 --rate 300   # open loop: 300 arrivals/s, <= 16 in flight
    python benchmarks/load.py --workers 2 --floor      # the request path alone (memoised answers)

By default the load is a closed loop: each connection sends its next request as soon as the last
answer arrives, so 16 requests are always in flight and latency is 16 / throughput (Little's law).
``--rate R`` makes it an open loop instead: requests arrive at random (Poisson) times, R per
second on average, and are sent over a pool of at most ``--concurrency`` keep-alive connections;
a request that finds every connection busy waits for one. Latency is counted from the request's
scheduled arrival, so waiting for a connection counts too (no "coordinated omission").

The client is a small asyncio HTTP/1.1 loop on raw sockets: it shares the CPU with the server,
so it has to cost far less per request than the server does. Its connections open 5 ms apart,
as independent clients' would (a single burst can all land on one worker process).

``--floor`` serves the app of ``benchmarks/floor_app.py`` instead: each worker computes the
answer for the benchmark's image once and then answers from memory, so what is left is the cost
of the request path itself (HTTP, routing, limits, multipart, the header check, the
model lane, the response): the lowest latency the real server could reach under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digit_png(index: int = 0, size: int = 100) -> bytes:
    """An MNIST test digit, dark ink on white paper, as a size x size RGB PNG."""
    from digitlab.data import load_dataset

    img = load_dataset("mnist").test_images[index].numpy()
    paper = Image.fromarray(255 - img).resize((size, size), Image.BILINEAR).convert("RGB")
    buf = io.BytesIO()
    paper.save(buf, format="PNG")
    return buf.getvalue()


def build_request(form: str, png: bytes, port: int) -> bytes:
    if form == "multipart":
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"digit.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + png + \
            f"\r\n--{boundary}--\r\n".encode()
        ctype = f"multipart/form-data; boundary={boundary}"
    elif form == "raw":
        body, ctype = png, "image/png"
    else:
        import base64
        body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()
        ctype = "application/json"
    head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (uvicorn's worker processes)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (a graceful shutdown), SIGKILL after 10 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def rss_kib(pid: int) -> int:
    """Resident memory of the server and its workers, KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by the server and its workers."""
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Tally:
    """Latencies and errors of one load run."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def exchange(self, conn: Connection | None, port: int, request: bytes, timeout: float,
                       start: float | None = None) -> Connection | None:
        """One request on ``conn`` (opened first if None), its latency counted from ``start``
        (default: once connected) and its answer checked. Returns the connection to reuse, or
        None if it failed (closed, the error counted)."""
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = conn
            t0 = time.perf_counter() if start is None else start
            writer.write(request)
            status, body = await asyncio.wait_for(read_response(reader), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            self.error(type(exc).__name__)
            if conn is not None:
                conn[1].close()
            return None
        self.latencies.append(time.perf_counter() - t0)
        if status != 200:
            self.error(f"HTTP {status}")
        elif b'"probabilities"' not in body:
            self.error("bad body")
        return conn

    def summary(self, elapsed: float) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([float("nan")])
        return {"requests": len(self.latencies), "seconds": elapsed,
                "rps": len(self.latencies) / elapsed,
                "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
                "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
                "errors": sum(self.errors.values()), "error_kinds": self.errors}


async def hammer(port: int, request: bytes, concurrency: int, seconds: float, max_requests: int,
                 timeout: float) -> dict:
    tally = Tally()
    sent = 0
    deadline = time.perf_counter() + seconds

    async def connection(i: int):
        nonlocal sent
        conn = None
        # Clients arrive a few ms apart, as independent ones do. Opened in one burst, all 16
        # connections can land on one uvicorn worker (its asyncio accept loop drains the whole
        # backlog at once) and the other worker idles for the whole run.
        await asyncio.sleep(i * 0.005)
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            conn = await tally.exchange(conn, port, request, timeout)
        if conn is not None:
            conn[1].close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(concurrency)))
    return tally.summary(time.perf_counter() - t0)


async def open_loop(port: int, request: bytes, concurrency: int, seconds: float,
                    max_requests: int, timeout: float, rate: float, seed: int = 0) -> dict:
    """Poisson arrivals at ``rate`` per second over a pool of ``concurrency`` connections."""
    tally = Tally()
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(concurrency):
        idle.put_nowait(None)  # a pool slot; its connection opens on first use
    rng = np.random.default_rng(seed)

    async def one(arrival: float):
        conn = await idle.get()
        idle.put_nowait(await tally.exchange(conn, port, request, timeout, start=arrival))

    t0 = time.perf_counter()
    deadline, arrival, tasks = t0 + seconds, t0, []
    while len(tasks) < max_requests:
        arrival += float(rng.exponential(1.0 / rate))
        if arrival >= deadline:
            break
        delay = arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(arrival)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    while not idle.empty():
        conn = idle.get_nowait()
        if conn is not None:
            conn[1].close()
    return tally.summary(elapsed)


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import http.client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    sys.exit("server did not become ready")


def measure(args, code: Path | None = None) -> tuple[dict, bytes]:
    """One load run against the server of this checkout, or of the code in ``code``."""
    def load(seconds: float, max_requests: int) -> dict:
        if args.rate is None:
            return asyncio.run(hammer(port, request, args.concurrency, seconds, max_requests,
                                      args.timeout))
        return asyncio.run(open_loop(port, request, args.concurrency, seconds, max_requests,
                                     args.timeout, args.rate))

    port = free_port()
    env = None
    if args.floor:
        from digitlab.server.app import MODEL_DIR_ENV, THREADS_ENV
        env = {**os.environ, THREADS_ENV: str(args.threads)}
        if args.model_dir:
            env[MODEL_DIR_ENV] = args.model_dir
        cmd = [sys.executable, "-m", "uvicorn", "floor_app:create_app", "--factory",
               "--app-dir", str(Path(__file__).resolve().parent), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(args.workers), "--log-level", "warning",
               "--no-access-log"]
    else:
        cmd = [sys.executable, "-m", "digitlab.cli", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--workers", str(args.workers), "--threads", str(args.threads),
               "--log-level", "warning"]
        if args.model_dir:
            cmd += ["--model-dir", args.model_dir]
    png = digit_png()
    request = build_request(args.form, png, port)
    if code is not None:  # import digitlab from the baseline's tree, not this checkout
        env = dict(env or os.environ)
        env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True, env=env,
                            cwd=str(code) if code is not None else None)
    try:
        wait_ready(port, proc)
        time.sleep(0.5)
        rss_idle = rss_kib(proc.pid)
        warm = load(args.warmup, 10**9)
        rss_before = rss_kib(proc.pid)
        cpu0, client0 = cpu_seconds(proc.pid), time.process_time()
        res = load(args.seconds, args.max_requests)
        cpu1, client1 = cpu_seconds(proc.pid), time.process_time()
        rss_after = rss_kib(proc.pid)
        alive = proc.poll() is None
    finally:
        stop(proc)

    growth = (rss_after - rss_before) / rss_before
    res.update(rate=args.rate, floor=args.floor, form=args.form, png_bytes=len(png),
               concurrency=args.concurrency, workers=args.workers, threads=args.threads, warmup_requests=warm["requests"],
               warmup_errors=warm["errors"], rss_idle_mib=rss_idle / 1024,
               rss_before_mib=rss_before / 1024, rss_after_mib=rss_after / 1024,
               rss_growth=growth, server_alive=alive, cpus=os.cpu_count(),
               server_cpu_ms_per_request=1000 * (cpu1 - cpu0) / max(1, res["requests"]),
               client_cpu_ms_per_request=1000 * (client1 - client0) / max(1, res["requests"]),
               load_average=os.getloadavg())
    return res, png


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", help="model directory (default: the shipped model)")
    ap.add_argument("--concurrency", type=int, default=16, help="open connections (default 16)")
    ap.add_argument("--seconds", type=float, default=30.0, help="test duration, s (default 30)")
    ap.add_argument("--max-requests", type=int, default=200_000, help="stop after this many")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up before measuring, s")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    ap.add_argument("--form", choices=["multipart", "raw", "json"], default="multipart",
                    help="how the image is sent (default multipart field 'file')")
    ap.add_argument("--rate", type=float, default=None, metavar="R",
                    help="open loop: R requests/s arriving at random times, at most "
                         "--concurrency in flight (default: closed loop)")
    ap.add_argument("--floor", action="store_true",
                    help="serve memoised answers (benchmarks/floor_app.py): the cost of the "
                         "request path without preprocessing and the model")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--baseline", metavar="REV",
                    help="then measure that commit's server the same way and print the ratios")
    ap.add_argument("--turns", type=int, default=1, metavar="N",
                    help="with --baseline: measure this checkout and the baseline N times each, "
                         "in turns, and compare the best run of each (a noisy machine's drift "
                         "falls on both; default 1)")
    args = ap.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        ap.error("--rate must be > 0")
    if args.concurrency < 1:
        ap.error("--concurrency must be >= 1")
    if args.turns < 1:
        ap.error("--turns must be >= 1")

    res, png = measure(args)
    base = None
    if args.baseline:
        import tempfile

        from predict_speed import baseline_tree
        with tempfile.TemporaryDirectory() as tmp:
            code = baseline_tree(args.baseline, Path(tmp))
            runs, base_runs = [res], []
            for turn in range(args.turns):
                base_runs.append(measure(args, code)[0])
                if turn + 1 < args.turns:
                    runs.append(measure(args)[0])
        res = max(runs, key=lambda r: r["rps"])
        base = max(base_runs, key=lambda r: r["rps"])
    warm = {"requests": res["warmup_requests"]}
    growth, alive = res["rss_growth"], res["server_alive"]
    rss_idle, rss_before, rss_after = (res[k] * 1024 for k in ("rss_idle_mib", "rss_before_mib",
                                                                 "rss_after_mib"))
    rows = [
        ("request", f"POST /api/predict, {args.form}, {len(png)} B 100x100 PNG"),
        ("server", f"{args.workers} worker(s) x {args.threads} torch thread(s), {os.cpu_count()} CPUs "
                   "shared with the client"
                   + ("; FLOOR: memoised answers, no preprocessing or model" if args.floor else "")),
        ("load", f"closed loop, {args.concurrency} keep-alive connections" if args.rate is None
                 else f"open loop, {args.rate:g} requests/s offered (Poisson), at most "
                      f"{args.concurrency} keep-alive connections"),
        ("duration", f"{res['seconds']:.1f} s (after {args.warmup:.0f} s warm-up, "
                     f"{warm['requests']} requests)"),
        ("requests", f"{res['requests']}"),
        ("throughput", f"{res['rps']:.0f} requests/s"),
        ("latency p50", f"{res['p50_ms']:.2f} ms"),
        ("latency p90", f"{res['p90_ms']:.2f} ms"),
        ("latency p99", f"{res['p99_ms']:.2f} ms"),
        ("latency max", f"{res['max_ms']:.1f} ms"),
        ("server CPU/request", f"{res['server_cpu_ms_per_request']:.2f} ms (client: "
                               f"{res['client_cpu_ms_per_request']:.2f} ms)"),
        ("load average", " ".join(f"{x:.1f}" for x in res["load_average"]) + " (1, 5, 15 min)"),
        ("errors", f"{res['errors']}" + (f" {res['error_kinds']}" if res["errors"] else "")),
        ("server RSS idle", f"{rss_idle / 1024:.1f} MiB"),
        ("server RSS before", f"{rss_before / 1024:.1f} MiB (after warm-up)"),
        ("server RSS after", f"{rss_after / 1024:.1f} MiB ({100 * growth:+.1f}%)"),
        ("server alive", "yes" if alive else "NO"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'metric':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:<{width}} | {v} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if base is not None:
        turns = "one run" if args.turns == 1 else f"best of {args.turns} turns each"
        print(f"\n| side by side, {turns} | this checkout | {args.baseline} | ratio |")
        print("| --- | ---: | ---: | ---: |")
        for key, label, fmt in (("rps", "requests/s", "{:.0f}"), ("p50_ms", "p50 ms", "{:.2f}"),
                                ("p99_ms", "p99 ms", "{:.2f}"), ("errors", "errors", "{}"),
                                ("server_cpu_ms_per_request", "server CPU ms/request", "{:.2f}")):
            ratio = f"{res[key] / base[key]:.2f}x" if base[key] else "-"  # (0 errors both)
            print(f"| {label} | {fmt.format(res[key])} | {fmt.format(base[key])} | {ratio} |")
    return 0 if alive and res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
