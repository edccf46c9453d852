"""What the server tells its operator: Prometheus metrics, request ids, the access log.

``Telemetry`` is a pure ASGI middleware, the outermost of the app's own: it gives every request
an id (a sane incoming ``X-Request-ID`` is kept, else a new one is made) and returns it in the
``X-Request-ID`` response header, times the request, counts it in ``ServerMetrics`` by route
template (``/api/predict``, never the raw path: a scanner's random paths all count as
``unmatched``) and status, and writes one access-log line when asked.

``ServerMetrics`` holds the metrics ``GET /metrics`` shows (prometheus_client). One process has
them in memory. Several uvicorn worker processes (``digitlab serve --workers N``) each answer
``/metrics`` in turn, so there each writes its values to files in the folder that
``PROMETHEUS_MULTIPROC_DIR`` names, and every scrape sums all the workers' files: the totals are
the server's, whichever worker answers. ``digitlab serve`` creates that folder when it starts
workers and removes it when it stops (prometheus_client decides the mode when it is first
imported, from that variable).

``log_config`` is the logging set-up handed to uvicorn (it is applied in every worker):
``text`` is uvicorn's own format; ``json`` writes one JSON object per line, with ``time``,
``level``, ``logger``, ``message`` and, for access lines, ``request_id``, ``method``, ``path``,
``status``, ``duration_ms`` and ``client``. Query strings are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from datetime import datetime, timezone

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess, values)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = "digitlab.request_id"  # where the id is kept in the ASGI scope
# An incoming id is kept if it is 1-128 of these characters (UUIDs, hex, base64, dotted or
# colon-separated trace ids); anything else could forge log lines or headers: a new one is made.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")
UNMATCHED = "unmatched"  # the endpoint label of a request that matched no route
# Seconds. A small image takes 2-5 ms, a batch of photos up to seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

access_log = logging.getLogger("digitlab.access")


def multiprocess_mode() -> bool:
    """True when prometheus_client keeps values in files (it read ``PROMETHEUS_MULTIPROC_DIR``
    when first imported in this process)."""
    return values.ValueClass is not values.MutexValue


def rejection_reason(reason: str | None) -> str:
    """A rejected prediction's reason as a metric label, one of a few: the reasons themselves
    are sentences with numbers in them."""
    text = reason or ""
    if text.startswith("low confidence"):
        return "low_confidence"
    if text.startswith("blank"):
        return "blank"
    if text.startswith("noise"):
        return "noise"
    return "not_a_digit"  # what preprocessing found instead: a line, a blob, a scribble...


class ServerMetrics:
    """The server's Prometheus metrics, in this process's own registry (or, in multiprocess
    mode, in the shared folder)."""

    def __init__(self):
        self.multiprocess = multiprocess_mode()
        # In multiprocess mode the scrape reads the files; registering is then pointless.
        self.registry = None if self.multiprocess else CollectorRegistry()
        r = self.registry
        self.requests = Counter("digitlab_http_requests", "HTTP requests answered, by route "
                                "template and status", ["endpoint", "status"], registry=r)
        self.latency = Histogram("digitlab_http_request_duration_seconds", "Time from the request "
                                 "reaching the app to the end of its answer, by route template",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_progress = Gauge("digitlab_http_requests_in_progress", "Requests being answered "
                                 "now", registry=r, multiprocess_mode="livesum")
        self.predictions = Counter("digitlab_predictions", "Digits classified and not rejected, "
                                   "by predicted class (each digit of a number counts)",
                                   ["digit"], registry=r)
        self.rejections = Counter("digitlab_rejections", "Digits rejected, by reason: "
                                  "low_confidence, blank, noise, not_a_digit", ["reason"],
                                  registry=r)
        # "livemax": a worker's series goes with it (close()), so after the workers are replaced
        # (SIGHUP, a new model in the same directory) only the new model's id is left.
        self.model = Gauge("digitlab_model_info", "The model served (value 1)",
                           ["model_id", "architecture", "kind", "backend"], registry=r,
                           multiprocess_mode="livemax")
        self._children: dict = {}  # labels -> metric child: .labels() costs a lock and a lookup
        self._model_labels: tuple | None = None  # the model_info series this process set

    def _child(self, metric, *labels):
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self._child(self.requests, endpoint, str(status)).inc()
        self._child(self.latency, endpoint).observe(seconds)

    def observe_predictions(self, predictions, classes: list[str]) -> None:
        """Count ``digitlab.predict.Prediction``s: each digit (each digit of a number) as a
        prediction of its class or a rejection with its reason; unreadable images not at all."""
        for pred in predictions:
            for d in pred.digits if pred.digits is not None else (pred,):
                if d.error:
                    continue
                if d.rejected or d.digit is None:
                    self._child(self.rejections, rejection_reason(d.reason)).inc()
                else:
                    self._child(self.predictions, classes[d.digit]).inc()

    def set_model(self, model_id: str, architecture: str, kind: str, backend: str) -> None:
        """The model this process serves now (at start-up and after each reload)."""
        labels = (model_id, architecture, kind, backend)
        old = self._model_labels
        if old is not None and old != labels:
            if self.multiprocess:  # removing a series is not implemented there: it goes to 0
                self.model.labels(*old).set(0)
            else:
                self.model.remove(*old)
        self._model_labels = labels
        self.model.labels(*labels).set(1)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (all workers' values in multiprocess mode)."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=os.environ.get(MULTIPROC_ENV))
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """At worker shutdown: drop this process's live gauges (in progress, model) from the
        shared folder."""
        if self.multiprocess and os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())


class Telemetry:
    """Request id, timing, request metrics and the access log, as a pure ASGI middleware."""

    def __init__(self, app, metrics: ServerMetrics, access: bool = False):
        self.app, self.metrics, self.access = app, metrics, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        method = scope["method"]  # before anything inside rewrites it (HEAD is served as GET)
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value if _SANE_ID.fullmatch(value) else None
                break
        rid = rid or os.urandom(16).hex().encode()
        scope[REQUEST_ID_KEY] = rid.decode()
        status = 500  # if the app raises before answering, the error middleware answers 500
        done = False

        def finish() -> None:
            nonlocal done
            if done:
                return
            done = True
            self.metrics.in_progress.dec()
            seconds = time.perf_counter() - start
            route = scope.get("route")
            endpoint = (getattr(route, "path_format", None) or getattr(route, "path", None)
                        or UNMATCHED)
            self.metrics.observe_request(endpoint, status, seconds)
            if self.access:
                self._log(scope, method, status, seconds)

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", rid)]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the answer's last bytes leave: a client that has its answer
                # finds it in the next scrape, even one that another worker answers.
                finish()
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            finish()  # no answer, or an exception: counted here

    @staticmethod
    def _log(scope, method: str, status: int, seconds: float) -> None:
        path = scope["path"]
        if not path.isprintable():  # a percent-encoded newline must not start a log line
            path = path.encode("unicode_escape").decode("ascii")
        client = scope.get("client")
        client = f"{client[0]}:{client[1]}" if client else "-"
        ms = round(seconds * 1000, 2)
        rid = scope[REQUEST_ID_KEY]
        access_log.info('%s - "%s %s" %d %.1f ms id=%s', client, method, path, status, ms, rid,
                        extra={"request_id": rid, "method": method, "path": path,
                               "status": status, "duration_ms": ms, "client": client})


_JSON_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "client")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the access
    fields when the record has them; a traceback as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
                            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _JSON_FIELDS:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


LOG_FORMATS = ("text", "json")


def log_config(fmt: str = "text", level: str = "info") -> dict:
    """``logging.config.dictConfig`` settings for uvicorn's and digitlab's loggers: uvicorn's own
    look for ``text``, ``JsonFormatter`` for ``json``. Access lines go to stdout, the rest to
    stderr, as uvicorn does."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if fmt == "json":
        formatters = {"default": {"()": f"{__name__}.JsonFormatter"},
                      "access": {"()": f"{__name__}.JsonFormatter"}}
    else:
        text = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s",
                "use_colors": None}
        formatters = {"default": text, "access": dict(text)}
    level = level.upper()
    return {
        "version": 1, "disable_existing_loggers": False, "formatters": formatters,
        "handlers": {
            "default": {"formatter": "default", "class": "logging.StreamHandler",
                        "stream": "ext://sys.stderr"},
            "access": {"formatter": "access", "class": "logging.StreamHandler",
                       "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "digitlab": {"handlers": ["default"], "level": level, "propagate": False},
            "digitlab.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
