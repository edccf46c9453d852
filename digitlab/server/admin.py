"""The admin token, and the endpoint that swaps the served model (``POST /api/admin/reload``).

Admin requests carry ``Authorization: Bearer <token>``; the token is compared in constant time
(``hmac.compare_digest``). Without a configured token every admin request is refused (403).
"""

from __future__ import annotations

import hmac
import os
import signal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import ConfigError
from .inputs import InputError, _json_body
from .reload import ReloadError, load_checked
from .schemas import Error, ReloadJSON, ReloadOut

ADMIN_TOKEN_ENV = "DIGITLAB_ADMIN_TOKEN"
MIN_TOKEN_LENGTH = 16  # characters: nothing shorter is safe against guessing over the network


def check_token(token: str | None) -> str | None:
    """An admin token as given (``--admin-token``, the environment), checked; None: no admin."""
    if token is None or token == "":
        return None
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip() or not token.isprintable():
        raise ConfigError(f"the admin token must be at least {MIN_TOKEN_LENGTH} printable "
                          f"characters without spaces around it (python -c 'import secrets; "
                          f"print(secrets.token_urlsafe(32))' makes one)")
    return token


def require_admin(request: Request) -> None:
    """Refuse the request unless it carries this server's admin token: 401 without one, 403
    with a wrong one or when the server has none."""
    expected = request.app.state.settings.admin_token
    if not expected:
        raise HTTPException(403, "admin endpoints are off on this server: start it with "
                                 f"--admin-token or {ADMIN_TOKEN_ENV}")
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(401, "this endpoint needs the admin token: send the header "
                                 "'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    # Header values arrive as latin-1 text: encoding them back gives the bytes that were sent.
    if not hmac.compare_digest(given.encode("latin-1"), expected.encode("utf-8")):
        raise HTTPException(403, "wrong admin token")


admin = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])

RELOAD_ERRORS = {code: {"model": Error, "description": text} for code, text in {
    400: "the new model cannot be served (the old one still is): the reason",
    401: "no admin token in the request",
    403: "wrong admin token, or none configured on the server",
    409: "several workers: only a reload of --model-dir (without model_dir) is possible",
}.items()}


@admin.post("/reload", response_model=ReloadOut, responses={
    **RELOAD_ERRORS, 202: {"description": "several workers: uvicorn restarts them one by one"}},
    summary="Swap the served model without stopping (admin token)",
    openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
        "schema": ReloadJSON.model_json_schema()}}}})
async def reload_model(request: Request):
    body = ReloadJSON()
    if (await request.body()).strip():
        body = await _json_body(request, ReloadJSON, request.app.state.limits)
    settings = request.app.state.settings
    reloader = request.app.state.reloader
    if settings.workers > 1:
        return await _restart_workers(request, body)
    try:
        old, new = await reloader.reload(body.model_dir)
    except ReloadError as exc:
        raise InputError(400, str(exc)) from None
    return ReloadOut(model_dir=new.info.model_dir, weights_sha256=new.info.weights_sha256,
                     previous_sha256=old.info.weights_sha256,
                     changed=new.info.weights_sha256 != old.info.weights_sha256)


async def _restart_workers(request: Request, body: ReloadJSON):
    """Several worker processes: this request reaches one of them. The model in --model-dir is
    tried here, then uvicorn's master is asked (SIGHUP) to replace every worker, one at a time;
    each new one loads --model-dir."""
    workers, reloader = request.app.state.settings.workers, request.app.state.reloader
    if body.model_dir is not None:
        raise HTTPException(409, f"this server runs {workers} worker processes and a request "
                                 f"reaches only one: put the new model in the server's "
                                 f"--model-dir and reload without 'model_dir' (every worker "
                                 f"then loads it)")
    try:
        await anyio.to_thread.run_sync(load_checked, reloader.load, reloader.model_dir)
    except ReloadError as exc:
        raise InputError(400, str(exc)) from None
    os.kill(os.getppid(), signal.SIGHUP)
    return JSONResponse({"detail": f"the model in --model-dir passed its test; the {workers} "
                                   f"workers are being replaced one at a time, each loading it "
                                   f"(GET /api/model shows the weights each worker serves)"},
                        status_code=202)
