"""The FastAPI application: ``create_app()`` wires the routes, limits, error handlers and static
page; its lifespan loads the Predictor once, at start-up, and every request shares it.

``create_app_from_env`` is the factory uvicorn imports when it runs several worker processes
(``digitlab serve --workers N``); it reads the settings from ``DIGITLAB_*`` environment variables.

With ``feedback_db`` the server stores what users say about its answers (server/feedback.py,
digitlab.feedback); ``admin_token`` enables the admin endpoints (server/admin.py). The model is
held in one ``reload.Served`` object, swapped whole by ``POST /api/admin/reload`` or SIGHUP.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..artifacts import WEIGHTS, default_model_dir
from ..onnxrt import model_id
from .admin import ADMIN_TOKEN_ENV, admin, check_token
from .feedback import feedback_api
from .inputs import BodyLimitMiddleware, Limits
from .ratelimit import RateLimiter
from .reload import Reloader, Served, load_checked
from .routes import STATIC, api, ops, page
from .schemas import ModelInfo
from .telemetry import REQUEST_ID_HEADER, REQUEST_ID_KEY, ServerMetrics, Telemetry

log = logging.getLogger("digitlab.server")

MODEL_DIR_ENV = "DIGITLAB_MODEL_DIR"
THREADS_ENV = "DIGITLAB_TORCH_THREADS"
FEEDBACK_DB_ENV = "DIGITLAB_FEEDBACK_DB"
FEEDBACK_RATE_ENV = "DIGITLAB_FEEDBACK_RATE"
FEEDBACK_BURST_ENV = "DIGITLAB_FEEDBACK_BURST"
WORKERS_ENV = "DIGITLAB_WORKERS"
ACCESS_LOG_ENV = "DIGITLAB_ACCESS_LOG"
BACKEND_ENV = "DIGITLAB_BACKEND"
PRECISION_ENV = "DIGITLAB_PRECISION"


@dataclass
class Settings:
    model_dir: str | None = None         # None -> the model shipped in the package
    reject_threshold: float | None = None  # None -> the model's own (config.json) threshold
    # Intra-op threads for torch in this process. One request is a single 28x28 image: more
    # threads only add synchronisation, and a server gets its parallelism from concurrent requests
    # and worker processes. None leaves torch's setting alone (tests, embedding in another app).
    torch_threads: int | None = None
    backend: str = "auto"                # auto | torch | onnxruntime (Predictor's backend)
    precision: str = "auto"              # auto | fp32 | bf16 | int8 (Predictor's precision)
    limits: Limits = field(default_factory=Limits)
    feedback_db: str | None = None       # path (SQLite) or SQLAlchemy URL; None: nothing stored
    feedback_rate: float = 30.0          # feedback posts per minute per client address...
    feedback_burst: int = 10             # ...and at most this many at once (token bucket)
    admin_token: str | None = None       # bearer token of the admin endpoints; None: they are off
    workers: int = 1                     # worker processes serving this app (reload: see admin)
    reload_on_sighup: bool = False       # SIGHUP reloads model_dir in place (one process only)
    access_log: bool = False             # one line per request on the "digitlab.access" logger

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        threads = env(THREADS_ENV)
        return cls(model_dir=env(MODEL_DIR_ENV) or None,
                   torch_threads=int(threads) if threads else None,
                   feedback_db=env(FEEDBACK_DB_ENV) or None,
                   feedback_rate=float(env(FEEDBACK_RATE_ENV) or cls.feedback_rate),
                   feedback_burst=int(env(FEEDBACK_BURST_ENV) or cls.feedback_burst),
                   admin_token=check_token(env(ADMIN_TOKEN_ENV)),
                   workers=int(env(WORKERS_ENV) or 1),
                   access_log=env(ACCESS_LOG_ENV) == "1",
                   backend=env(BACKEND_ENV) or "auto",
                   precision=env(PRECISION_ENV) or "auto")

    def to_env(self) -> dict[str, str | None]:
        """The environment ``from_env`` reads these settings back from (worker processes of
        ``--workers N`` import the app themselves); None: unset the variable."""
        return {MODEL_DIR_ENV: self.model_dir,
                THREADS_ENV: str(self.torch_threads) if self.torch_threads else None,
                FEEDBACK_DB_ENV: self.feedback_db, FEEDBACK_RATE_ENV: str(self.feedback_rate),
                FEEDBACK_BURST_ENV: str(self.feedback_burst), ADMIN_TOKEN_ENV: self.admin_token,
                WORKERS_ENV: str(self.workers), ACCESS_LOG_ENV: "1" if self.access_log else "0",
                BACKEND_ENV: self.backend, PRECISION_ENV: self.precision}


def _model_info(predictor, model_dir: Path, limits: Limits) -> ModelInfo:
    cfg = predictor.config
    # Names and hashes, never where things are on this server (see public_value).
    return ModelInfo(
        model_dir=model_dir.name,
        weights_sha256=predictor.model_id or model_id(model_dir / WEIGHTS),
        architecture=cfg["architecture"],
        kind=cfg.get("kind"), backend=predictor.backend, precision=predictor.precision,
        model_kwargs=public_value(cfg.get("model_kwargs") or {}),
        classes=list(predictor.classes),
        parameters=cfg.get("parameters"),
        reject_threshold=getattr(predictor, "reject_threshold", None),
        metrics=public_value(cfg.get("metrics")), training=public_value(cfg.get("training")),
        dataset=public_value(cfg.get("dataset")), input=public_value(cfg.get("input")),
        versions=public_value(cfg.get("versions")), limits=asdict(limits))


def _report_model(metrics: ServerMetrics, served: Served) -> None:
    info = served.info
    metrics.set_model(info.weights_sha256, info.architecture, info.kind or "single",
                      info.backend)


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def public_value(value):
    """A config value as /api/model shows it: every string that is a file-system path (a model's
    source directory, a dataset folder) is cut to its last component."""
    if isinstance(value, dict):
        return {k: public_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_value(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~", "\\")) or _DRIVE.match(value)
                                   or (("/" in value or "\\" in value)
                                       and not any(c.isspace() for c in value))):
        return re.split(r"[\\/]", value.rstrip("/\\"))[-1]
    return value


def create_app(model_dir: str | os.PathLike | None = None, settings: Settings | None = None
               ) -> FastAPI:
    """The app; nothing is loaded until it starts (lifespan). ``model_dir`` overrides settings."""
    settings = settings or Settings()
    directory = Path(model_dir or settings.model_dir or default_model_dir())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Heavy imports here, not at module import: `digitlab --help` stays quick.
        from ..predict import Predictor

        def load(model_dir: Path) -> Served:
            predictor = Predictor(model_dir, reject_threshold=settings.reject_threshold,
                                  backend=settings.backend, precision=settings.precision,
                                  threads=settings.torch_threads)
            if predictor.backend == "torch" and settings.torch_threads:
                import torch  # only here: an ONNX Runtime server never imports it
                torch.set_num_threads(settings.torch_threads)
            return Served(predictor, _model_info(predictor, model_dir, settings.limits), model_dir)

        app.state.served = load_checked(load, directory)
        app.state.reloader = Reloader(app, load, directory,
                                      on_swap=lambda served: _report_model(metrics, served))
        # One image at a time per process: preprocessing is Python-bound, so concurrent threads
        # in one process only fight over the GIL (a worker spent 2.7x the CPU per request that
        # way). Parallelism comes from `--workers`; small images run on the event loop, big
        # ones in a thread while the loop goes on reading requests (routes.INLINE_MAX_PIXELS).
        app.state.model_lane = anyio.CapacityLimiter(1)
        log.info("digitlab: loaded %s (%s)", directory, app.state.served.info.architecture)
        _report_model(metrics, app.state.served)
        if settings.feedback_db:
            from ..feedback import open_store

            app.state.feedback = await anyio.to_thread.run_sync(open_store, settings.feedback_db)
        unhook = app.state.reloader.install_sighup() if settings.reload_on_sighup else None
        try:
            yield
        finally:
            if unhook is not None:
                unhook()
            if app.state.feedback is not None:
                app.state.feedback.close()
                app.state.feedback = None
            app.state.served = None
            metrics.close()

    app = FastAPI(
        title="digitlab", version=__version__, lifespan=lifespan,
        # /docs is served below from the swagger-ui-bundle package, so it works offline
        # (FastAPI's default pulls Swagger UI from a CDN); ReDoc has no offline bundle: off.
        docs_url=None, redoc_url=None,
        description="Handwritten-digit recognition: send an image, get the digit, its "
                    "probabilities and the 28x28 image the model saw. The page at / draws and "
                    "uploads digits.")
    app.state.settings = settings
    app.state.limits = settings.limits
    app.state.served = None
    app.state.feedback = None
    app.state.feedback_limiter = RateLimiter(settings.feedback_rate / 60.0, settings.feedback_burst)
    metrics = app.state.metrics = ServerMetrics()
    app.add_middleware(BodyLimitMiddleware, limits=settings.limits)
    app.add_middleware(HeadAsGet)
    # Outermost of ours (added last): it counts and times what the others answer too (413, 408).
    app.add_middleware(Telemetry, metrics=metrics, access=settings.access_log)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
                  for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": detail or "invalid request", "errors": errors},
                            status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        # A bug, not a bad input: log it with its traceback, keep the worker, answer JSON.
        # (This handler runs outside the middlewares, so it adds the request id itself.)
        rid = request.scope.get(REQUEST_ID_KEY, "-")
        log.exception("unhandled error on %s %s (request id %s)", request.method,
                      request.url.path, rid)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500,
                            headers={REQUEST_ID_HEADER: rid})

    app.include_router(api)
    app.include_router(feedback_api)
    app.include_router(admin)
    app.include_router(page)
    app.include_router(ops)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _offline_docs(app)
    return app


class HeadAsGet:
    """HEAD is answered wherever GET is, as GET would be, without the body (FastAPI's routes
    answer only the methods they declare; load balancers and uptime checks send HEAD)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def without_body(message):
            if message["type"] == "http.response.start" and "route" in inner:
                scope["route"] = inner["route"]  # the route matched, for the metrics outside
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # A copy: the server reads the method from the original to send no body.
        inner = {**scope, "method": "GET"}
        await self.app(inner, receive, without_body)


def _offline_docs(app: FastAPI) -> None:
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="digitlab API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")


def create_app_from_env() -> FastAPI:
    return create_app(settings=Settings.from_env())
