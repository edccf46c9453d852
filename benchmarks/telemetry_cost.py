"""What the Telemetry middleware (request id, metrics, timing) costs a request, alone.

    python benchmarks/telemetry_cost.py
    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) python benchmarks/telemetry_cost.py   # as --workers N

A stub ASGI app answers 200 with a tiny body; the script times it called bare and wrapped in
``digitlab.server.telemetry.Telemetry``, 20,000 calls each, three rounds, and prints the time per
call in microseconds. The access log is off, as by default.
"""

from __future__ import annotations

import asyncio
import time

from digitlab.server.telemetry import ServerMetrics, Telemetry

CALLS = 20_000


class _Route:
    path_format = "/api/predict"


async def stub_app(scope, receive, send):
    scope["route"] = _Route
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _send(message):
    pass


async def _receive():
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope() -> dict:
    return {"type": "http", "method": "POST", "path": "/api/predict", "client": ("127.0.0.1", 5),
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"image/png"),
                        (b"content-length", b"1000")]}


async def per_call_us(app) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        await app(_scope(), _receive, _send)
    return (time.perf_counter() - start) / CALLS * 1e6


async def main() -> None:
    metrics = ServerMetrics()
    wrapped = Telemetry(stub_app, metrics)
    print(f"metrics {'in files (multiprocess mode)' if metrics.multiprocess else 'in memory'}")
    print("| round | bare app, us/call | with Telemetry, us/call | added, us |")
    print("| ---: | ---: | ---: | ---: |")
    for i in range(3):
        bare, full = await per_call_us(stub_app), await per_call_us(wrapped)
        print(f"| {i + 1} | {bare:.1f} | {full:.1f} | {full - bare:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
