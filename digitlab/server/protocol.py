"""How ``digitlab serve`` runs uvicorn: ``serve``, its options, and a header read timeout
uvicorn lacks.

``serve`` runs one process, or uvicorn's supervisor and N worker processes that import the app
themselves (``app.create_app_from_env``: the settings travel in the environment, and so does the
folder where the workers' metrics meet, see ``telemetry``). SIGTERM is a graceful stop: uvicorn
stops listening, lets the requests in flight finish within ``graceful_timeout`` seconds, shuts
the app down, and ``serve`` returns normally (so the command exits 0).

Uvicorn closes a connection that stays idle for ``timeout_keep_alive`` seconds after a response,
but has no limit on how long a request's headers may take: a client that opens a connection and
sends nothing, or one header byte every few seconds, holds it forever. ``GuardedHttpToolsProtocol``
is uvicorn's httptools protocol with one timer more: a request's headers must be complete within
``HEADER_TIMEOUT`` seconds of the connection opening or of the previous response, or the
connection is closed. Body read timeouts are the app's (``inputs.BodyLimitMiddleware``).

A graceful stop (SIGTERM, or uvicorn replacing a worker) closes the connections that are between
requests at once, in uvicorn. A client's new connection that the stopping worker had just
accepted was closed before its request arrived, and the client saw "disconnected without a
response" while the other workers were answering. ``GuardedHttpToolsProtocol`` gives such a
connection ``SHUTDOWN_GRACE`` seconds: a request that arrives in time is answered with
``Connection: close``; a connection still idle then is closed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .telemetry import MULTIPROC_ENV, log_config

HEADER_TIMEOUT = 10.0  # seconds for a request's headers to arrive
KEEP_ALIVE_TIMEOUT = 5  # seconds an idle keep-alive connection is kept (uvicorn's default)
WORKER_START_TIMEOUT = 60  # seconds a new worker process may take to start serving
# Seconds in-flight requests get to finish after SIGTERM: a batch of 32 photos takes a few.
GRACEFUL_TIMEOUT = 10.0
# Seconds a connection between requests gets, once a graceful stop begins, for a request that
# is already on its way.
SHUTDOWN_GRACE = 1.0
PROTOCOL = f"{__name__}:GuardedHttpToolsProtocol"  # by name, so worker processes import it


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = HEADER_TIMEOUT
    shutdown_grace = SHUTDOWN_GRACE
    _header_timer: asyncio.TimerHandle | None = None
    _stopping = False

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed

    def shutdown(self) -> None:
        """A graceful stop has begun: a request in flight is finished and the connection closed
        (as uvicorn does); a connection between requests is closed after ``shutdown_grace``
        seconds unless a request arrives first."""
        self._stopping = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self.transport.is_closing():
            self.loop.call_later(self.shutdown_grace, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request's headers are already in
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def uvicorn_options(host: str, port: int, log_level: str = "info", log_format: str = "text",
                    graceful_timeout: float = GRACEFUL_TIMEOUT,
                    protocol: str | type = PROTOCOL) -> dict:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config``, as ``digitlab serve`` uses them.

    Uvicorn's own access log is off: the app writes its own, with the request id and duration
    (``telemetry.Telemetry``, ``Settings.access_log``). ``graceful_timeout``: on SIGTERM, seconds
    that requests already in flight get to finish before they are cancelled."""
    return dict(host=host, port=port, log_level=log_level, access_log=False,
                log_config=log_config(log_format, log_level),
                timeout_graceful_shutdown=graceful_timeout, timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
                http=protocol)


def serve(settings, host: str, port: int, *, log_level: str = "info",
          log_format: str = "text", graceful_timeout: float = GRACEFUL_TIMEOUT) -> None:
    """Serve with ``settings`` (``app.Settings``; ``settings.workers`` processes) until Ctrl-C
    (KeyboardInterrupt) or SIGTERM (a normal return)."""
    import dataclasses

    import uvicorn

    from .app import create_app

    options = uvicorn_options(host, port, log_level, log_format, graceful_timeout)
    # After a graceful stop uvicorn raises the signal again, with the handler it found when it
    # started: this one, so that the stop is a normal return instead of death by SIGTERM.
    previous = signal.getsignal(signal.SIGTERM)
    metrics_dir = None
    try:
        signal.signal(signal.SIGTERM, _stopped)
        if settings.workers == 1:
            # SIGHUP reloads --model-dir in place (one process: no master to restart workers)
            uvicorn.run(create_app(settings=dataclasses.replace(settings, reload_on_sighup=True)),
                        **options)
            return
        if not os.environ.get(MULTIPROC_ENV):  # a folder of the caller's own is left alone
            metrics_dir = tempfile.mkdtemp(prefix="digitlab-metrics-")
            os.environ[MULTIPROC_ENV] = metrics_dir
        # Worker processes import the app themselves: the settings travel in the environment.
        for key, value in settings.to_env().items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # SIGHUP goes to uvicorn's master, which replaces the workers one at a time. A new
        # worker imports torch and loads the model before it is ready: uvicorn's 5 s default
        # aborted that rolling restart on a busy machine.
        uvicorn.run("digitlab.server.app:create_app_from_env", factory=True,
                    workers=settings.workers, timeout_worker_healthcheck=WORKER_START_TIMEOUT,
                    **options)
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


class _Stopped(Exception):
    """SIGTERM arrived: stop serving, successfully."""


def _stopped(signum, frame):
    raise _Stopped()
