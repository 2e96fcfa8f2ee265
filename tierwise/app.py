"""The app factory: builds engine, planes and scheduler in the lifespan, never at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import evaluator.api
import router.api
from evaluator.graders import GraderEnv
from router.errors import TierwiseError, error_body, field_path
from router.gateway.api import gateway_api
from router.keys import KeyRing
from router.providers import Provider
from tierwise.planes import running_planes
from tierwise.settings import Settings

log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {
        "description": text,
        "content": {
            "application/json": {
                "example": {"error": {"code": name, "message": "...", "field": "..."}}
            }
        },
    }
    for code, text, name in (
        (401, "No API key, or an unknown or revoked one", "unauthorized"),
        (403, "The API key lacks the endpoint's scope", "forbidden"),
        (404, "Unknown decision id, task class or model", "not_found"),
        (422, "Invalid input; `field` names the offending field", "invalid_input"),
        (503, "No routing policy applied yet", "no_policy"),
    )
}


def _field_of(error: Mapping[str, Any]) -> str:
    """Field name of a validation error: ``messages[0].content``, ``[2].usage``; ``body`` for a
    body that is not JSON. Pydantic's union-branch tags (``str``, ``list[...]``) are dropped."""
    if error.get("type") == "json_invalid":
        return "body"
    loc = list(error.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path"):
        loc = loc[1:]
    return field_path(loc) or "body"


def _say_who_may_call(keys: KeyRing, settings: Settings) -> None:
    """Log at start-up whether callers need an API key, and whether operators need more."""
    if keys.open:
        log.warning("no API keys: every endpoint is open; create one with `tierwise keys create`")
        if settings.admin_token is None:
            log.warning("operator endpoints are open: set TIERWISE_ADMIN_TOKEN to protect them")
    elif keys.live == 0:
        log.warning(
            "every API key (%d) is revoked: every endpoint but /healthz refuses callers; "
            "create one with `tierwise keys create`",
            keys.revoked,
        )
    else:
        log.info(
            "%d API keys (%d revoked): every endpoint but /healthz needs one",
            keys.live,
            keys.revoked,
        )


def create_app(
    settings: Settings | None = None,
    *,
    env_factory: Callable[[], GraderEnv] | None = None,
    gateway_upstream: Provider | None = None,
) -> FastAPI:
    """The tierwise service. ``env_factory`` overrides how grading reaches a reference model
    (default: ``settings.reference_provider``: replay from the recorded data sets in
    ``settings.datasets_dir``, or a live OpenAI / Anthropic provider built in the lifespan);
    ``gateway_upstream`` answers every gateway call (default: ``settings.gateway_upstream``)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_planes(
            settings, env_factory=env_factory, gateway_upstream=gateway_upstream
        ) as planes:
            if settings.run_scheduler:
                planes.scheduler.start()
            keys = KeyRing(planes.sessions, poll_interval_s=settings.snapshot_poll_s)
            await keys.start()
            try:
                app.state.settings = settings
                app.state.admin_token = settings.admin_token
                app.state.keys = keys
                _say_who_may_call(keys, settings)
                app.state.engine = planes.engine
                app.state.sessions = planes.sessions
                app.state.router = planes.router
                app.state.gateway = planes.gateway
                app.state.cache = planes.cache
                app.state.evaluator = planes.evaluator
                yield
            finally:
                await keys.stop()

    app = FastAPI(
        title="tierwise",
        version="0.1.0",
        summary="Routing decisions, sampled grading and escalation for LLM traffic",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )

    @app.exception_handler(TierwiseError)
    async def _tierwise_error(_request: Request, exc: TierwiseError) -> JSONResponse:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = error_body(code, str(exc.detail), None, exc.status_code)
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(first)
        body = {
            **error_body("invalid_input", f"{field}: {first.get('msg')}", field, 422),
            "errors": [{"field": _field_of(e), "message": e.get("msg")} for e in errors],
        }
        return JSONResponse({"error": body}, status_code=422)

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> dict[str, object]:
        """Liveness, with the serving snapshot's table version (null before any policy)."""
        return {"status": "ok", "table_version": request.app.state.router.table_version}

    app.include_router(router.api.api)
    app.include_router(gateway_api)
    app.include_router(evaluator.api.api)
    return app
