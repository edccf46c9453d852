"""The app for ``benchmarks/load.py --floor``: ``digitlab serve`` with its predictions memoised.

Each worker preprocesses and classifies an image the first time it sees its bytes and answers
later requests for the same bytes from memory. Everything else runs as in the real server (HTTP,
FastAPI routing, the body limit, multipart parsing, the header check, the model lane,
the response schema), so a load test against it measures the request path's
own cost: the floor under any latency the real server can reach. Benchmark-only; the server
itself never caches.

    uvicorn floor_app:create_app --factory --app-dir benchmarks
"""

from __future__ import annotations

from digitlab.predict import Predictor
from digitlab.server.app import create_app_from_env

_real_predict_one = Predictor.predict_one


def _memoised_predict_one(self, image, **kw):
    memo = self.__dict__.setdefault("_floor_memo", {})
    key = (bytes(image), tuple(sorted(kw.items())))
    if key not in memo:
        memo[key] = _real_predict_one(self, image, **kw)
    return memo[key]


def create_app():
    Predictor.predict_one = _memoised_predict_one
    return create_app_from_env()
