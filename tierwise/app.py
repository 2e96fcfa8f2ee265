"""The app factory: builds engine, planes and scheduler in the lifespan, never at import."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

import evaluator.api
import router.api
from evaluator.graders import GraderEnv
from router.errors import TierwiseError, Unavailable, error_body, field_path
from router.gateway.api import gateway_api
from router.health import is_connection_error, one_line
from router.keys import KeyRing, require
from router.lane.api import lane_api
from router.metrics import CONTENT_TYPE, Metrics
from router.providers import Provider
from tierwise.limits import BodyLimit, RequestTooLarge
from tierwise.logs import RequestContext
from tierwise.openapi import HealthOut, ReadyOut, openapi_document
from tierwise.planes import running_planes
from tierwise.readiness import readiness
from tierwise.settings import Settings

log = logging.getLogger(__name__)


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


async def _refresh_stored(app: FastAPI) -> None:
    """Read the database's figures for a scrape; while the database cannot be reached they are
    left out of it (absent, not stale) and the scrape still answers."""
    metrics: Metrics = app.state.metrics
    try:
        async with app.state.sessions() as session:
            await metrics.refresh(session)
    except (DBAPIError, OSError) as exc:
        metrics.forget_stored()
        log.warning("metrics: the database's figures are left out: %s", type(exc).__name__)


def _freeze_start_up_heap() -> None:
    """Move everything start-up allocated (modules, the app, the snapshot, models) out of the
    garbage collector's reach (``gc.freeze``): a full collection then walks only what was
    allocated since. Without it, full collections under load paused the event loop for up to
    330 ms (measured with ``gc.callbacks`` under ``bench/route.py``'s 32-connection load: 9
    in 15 s, 1.4 s in all), which was the p99 of ``POST /v1/route``."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None,
    *,
    env_factory: Callable[[], GraderEnv] | None = None,
    gateway_upstream: Provider | None = None,
    spool: bool = True,
    freeze_heap: bool = False,
) -> FastAPI:
    """The tierwise service. ``env_factory`` overrides how grading reaches a reference model
    (default: ``settings.reference_provider``: replay from the recorded data sets in
    ``settings.datasets_dir``, or a live OpenAI / Anthropic provider built in the lifespan);
    ``spool`` False keeps no disk spool (``tierwise replay``: nothing it acknowledges is a
    caller's);
    ``gateway_upstream`` answers every gateway call (default: ``settings.gateway_upstream``);
    ``freeze_heap`` moves what start-up allocated out of the garbage collector's reach once the
    app has started (``tierwise serve``: one app a process; not for tests, which start many)."""
    settings = settings or Settings()
    metrics = Metrics()  # this app's own registry: two apps in one process never collide

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_planes(
            settings,
            env_factory=env_factory,
            gateway_upstream=gateway_upstream,
            metrics=metrics,
            spool=spool,
        ) as planes:
            if settings.run_scheduler:
                planes.scheduler.start()
            keys = KeyRing(
                planes.sessions, poll_interval_s=settings.snapshot_poll_s, health=planes.health
            )
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
                app.state.lane = planes.lane
                app.state.cache = planes.cache
                app.state.evaluator = planes.evaluator
                app.state.compression = planes.compression
                app.state.health = planes.health
                app.state.scheduler = planes.scheduler if settings.run_scheduler else None
                if freeze_heap:
                    _freeze_start_up_heap()
                yield
            finally:
                await keys.stop()

    app = FastAPI(
        title="tierwise",
        version="0.1.0",
        summary="Routing decisions, sampled grading and escalation for LLM traffic",
        lifespan=lifespan,
    )
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    app.state.metrics = metrics
    app.add_middleware(RequestContext, access_log=settings.access_log)

    @app.exception_handler(TierwiseError)
    async def _tierwise_error(_request: Request, exc: TierwiseError) -> JSONResponse:
        headers = None
        if isinstance(exc, Unavailable):
            headers = {"retry-after": str(exc.retry_after_s)}
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)

    async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
        """A database failure on any path: 503 with ``Retry-After`` in the error shape when
        the database cannot be reached, else 500 in the error shape (logged with its
        traceback: a bug)."""
        if not is_connection_error(exc):
            log.error("unexpected error", exc_info=exc)
            body = error_body("internal", f"internal error: {one_line(exc)}", None, 500)
            return JSONResponse({"error": body}, status_code=500)
        log.debug("request failed: database unreachable", exc_info=exc)
        message = f"the database is unreachable ({one_line(exc)}); retry later"
        body = error_body("unavailable", message, None, 503)
        headers = {"retry-after": str(settings.retry_after_s)}
        return JSONResponse({"error": body}, status_code=503, headers=headers)

    for kind in (SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        app.add_exception_handler(kind, _database_error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status_code, "http_error"
        )
        if exc.status_code == 400:  # FastAPI's "error parsing the body": not JSON, or not UTF-8
            body = error_body("invalid_input", "body: not valid JSON (UTF-8)", "body", 422)
            return JSONResponse({"error": body}, status_code=422)
        field = "body" if isinstance(exc, RequestTooLarge) else None
        body = error_body(code, str(exc.detail), field, exc.status_code)
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

    @app.get("/healthz", tags=["ops"], response_model=HealthOut)
    async def healthz(request: Request) -> dict[str, object]:
        """Liveness only: the process answers (the database is not asked; ``/readyz`` says
        whether to send traffic). With the serving snapshot's table version (null before any
        policy)."""
        return {"status": "ok", "table_version": request.app.state.router.table_version}

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
        dependencies=[Depends(require("read-samples"))],
    )
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics (``router.metrics`` lists them), in the text exposition format.
        Needs the ``read-samples`` scope once keys exist: the figures are the ones the cost
        and quality endpoints show (classes, models, spend)."""
        await _refresh_stored(request.app)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get(
        "/readyz",
        tags=["ops"],
        response_model=None,
        responses={
            200: {"model": ReadyOut, "description": "Ready: every check passes"},
            503: {"description": "Not ready: `error.field` names the first failing check"},
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: database reachable, snapshot fresh, spool not full, jobs on time,
        reference provider answering (:mod:`tierwise.readiness`). 200 when every check
        passes; 503 with ``Retry-After`` and the error shape naming the failing checks."""
        state = request.app.state
        checks = await readiness(
            settings, state.engine, state.router, state.health, state.scheduler
        )
        failing = [name for name, check in checks.items() if not check.ok]
        body: dict[str, object] = {
            "status": "not_ready" if failing else "ready",
            "failing": failing,
            "checks": {name: check.as_dict() for name, check in checks.items()},
        }
        if not failing:
            return JSONResponse(body)
        message = "not ready: " + "; ".join(f"{n}: {checks[n].detail}" for n in failing)
        body["error"] = error_body("not_ready", message, failing[0], 503)
        headers = {"retry-after": str(settings.retry_after_s)}
        return JSONResponse(body, status_code=503, headers=headers)

    # Outermost of the app's own middleware: a body over the limit never reaches a route.
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.include_router(router.api.api)
    app.include_router(gateway_api)
    app.include_router(lane_api)
    app.include_router(evaluator.api.api)
    # POST /v1/route's common case, first in the routes (router.api.RouteShortcut); the rest
    # of its requests reach the documented endpoint above through the app's router.
    app.router.routes.insert(0, router.api.RouteShortcut(app.router))
    return app
