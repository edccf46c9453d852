"""A token bucket per client: ``rate`` requests a second on average, ``burst`` at once.

Buckets live in this worker's memory: with N worker processes a client can get up to N times
the rate (a shared limit belongs in front of the service, in the proxy). At most
``max_clients`` buckets are kept; past that the least recently seen client's is forgotten,
which gives that client a full bucket again, never less than the limit allows.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Callable

from starlette.requests import Request


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time

    def take(self, client: str) -> float:
        """Spend one token of ``client``'s bucket: 0.0 if there was one, else the seconds
        until there is (the request is refused and spends nothing)."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)  # most recently seen last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def client_key(request: Request) -> str:
    """The client's address as the server sees it (behind a proxy, uvicorn's
    ``--forwarded-allow-ips`` makes it the address in X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def retry_after(wait: float) -> str:
    """A Retry-After header value: whole seconds, rounded up."""
    return str(max(1, math.ceil(wait)))
