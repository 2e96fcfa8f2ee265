"""The app factory: builds engine, planes and scheduler in the lifespan, never at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException

import evaluator.api
import router.api
from evaluator.graders import GraderEnv
from evaluator.providers import Provider, provider_from_settings
from evaluator.service import (
    HELD_OUT_FILES,
    Evaluator,
    default_replay_env,
    held_out_paths,
    provider_env,
)
from router.db import make_engine, session_factory
from router.errors import TierwiseError, field_path
from router.policy import load_policy
from router.service import Router
from router.table import apply_policy, latest_policy
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


async def _apply_initial_policy(sessions: async_sessionmaker[AsyncSession], path: Path) -> None:
    """Apply ``path`` when no policy was ever applied (first start of a fresh database).

    Raises:
        PolicyError: the file is missing or invalid: the service refuses to start on it.
    """
    policy = load_policy(path)
    async with sessions() as session:
        if await latest_policy(session) is None:
            result = await apply_policy(session, policy)
            await session.commit()
            log.info("applied policy %s at start-up: table version %d", path, result.version)


def create_app(
    settings: Settings | None = None, *, env_factory: Callable[[], GraderEnv] | None = None
) -> FastAPI:
    """The tierwise service. ``env_factory`` overrides how grading reaches a reference model
    (default: ``settings.reference_provider``: replay from the recorded data sets in
    ``settings.datasets_dir``, or a live OpenAI / Anthropic provider built in the lifespan)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live: Provider | None = None
        if env_factory is None and settings.reference_provider != "replay":
            live = provider_from_settings(settings)  # InvalidInput: unknown name, no key
        elif env_factory is None and not held_out_paths(settings.datasets_dir):
            log.warning(
                "reference provider 'replay' found no held-out set (%s) in %s: sampled outcomes "
                "cannot be graded; set TIERWISE_DATASETS_DIR to the folder that holds them (a "
                "checkout's datasets/) or TIERWISE_REFERENCE_PROVIDER to openai or anthropic",
                ", ".join(HELD_OUT_FILES),
                settings.datasets_dir.resolve(),
            )
        engine = make_engine(
            settings.database_url, statement_cache_size=settings.db_statement_cache_size
        )
        sessions = session_factory(engine)
        data_plane = Router(
            sessions,
            poll_interval_s=settings.snapshot_poll_s,
            flush_interval_s=settings.decision_flush_s,
        )
        control_plane = Evaluator(
            sessions,
            env_factory
            or (
                (lambda: default_replay_env(settings.datasets_dir))
                if live is None
                else (lambda: provider_env(live))
            ),
            batch_size=settings.grading_batch_size,
            concurrency=settings.grading_concurrency,
            lease_s=settings.grading_lease_s,
        )
        if settings.policy_file is not None:
            await _apply_initial_policy(sessions, settings.policy_file)
        await data_plane.start()
        if settings.run_scheduler:
            control_plane.start_scheduler(
                grading_interval_s=settings.grading_interval_s,
                escalation_interval_s=settings.escalation_interval_s,
            )
        app.state.settings = settings
        app.state.admin_token = settings.admin_token
        if settings.admin_token is None:
            log.warning("operator endpoints are open: set TIERWISE_ADMIN_TOKEN to protect them")
        app.state.engine = engine
        app.state.sessions = sessions
        app.state.router = data_plane
        app.state.evaluator = control_plane
        try:
            yield
        finally:
            control_plane.stop_scheduler()
            await data_plane.stop()
            await engine.dispose()
            if live is not None:
                await live.aclose()

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
        body = {"code": code, "message": str(exc.detail), "field": None}
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(first)
        body = {
            "code": "invalid_input",
            "message": f"{field}: {first.get('msg')}",
            "field": field,
            "errors": [{"field": _field_of(e), "message": e.get("msg")} for e in errors],
        }
        return JSONResponse({"error": body}, status_code=422)

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> dict[str, object]:
        """Liveness, with the serving snapshot's table version (null before any policy)."""
        return {"status": "ok", "table_version": request.app.state.router.table_version}

    app.include_router(router.api.api)
    app.include_router(evaluator.api.api)
    return app
