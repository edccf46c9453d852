"""POST /api/predict/batch with 32 images: how long the server takes, per backend and precision.

Starts `digitlab serve` (one worker, one thread) in a subprocess for each of ONNX Runtime on
the 8-bit model.int8.onnx, ONNX Runtime on model.onnx and PyTorch, sends the same
32 multipart images (100x100 PNGs of MNIST test digits, dark on white) one request at a time,
and prints the median and p90 of the request's time on loopback (a single client: no queueing,
so this is the server's time plus a loopback round trip, an upper bound on the server's own).

    .venv/bin/python benchmarks/batch.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid

import httpx

from load import digit_png, free_port, stop, wait_ready

TARGET_MS = 15.0


def batch_body(n: int) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for i in range(n):
        parts.append((f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                      f"filename=\"d{i}.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
                     + digit_png(i) + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


RUNS = (("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("torch", "auto"))


def measure(backend: str, precision: str, body: bytes, ctype: str, repeats: int) -> list[float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "digitlab", "serve", "--port", str(port),
                             "--backend", backend, "--precision", precision,
                             "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, proc)
        times = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for i in range(repeats + 5):
                t0 = time.perf_counter()
                r = client.post("/api/predict/batch", content=body, headers={"content-type": ctype})
                elapsed = time.perf_counter() - t0
                r.raise_for_status()
                if i >= 5:  # warm-up
                    times.append(elapsed * 1000)
        return times
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    body, ctype = batch_body(args.images)
    print("| backend | precision | images | median ms | p90 ms | target |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for backend, precision in RUNS:
        t = sorted(measure(backend, precision, body, ctype, args.repeats))
        print(f"| {backend} | {precision} | {args.images} | {statistics.median(t):.1f} | "
              f"{t[int(0.9 * (len(t) - 1))]:.1f} | <= {TARGET_MS:.0f} ms |")


if __name__ == "__main__":
    main()
