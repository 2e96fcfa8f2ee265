"""Shared fixtures: every DB test runs on SQLite and on PostgreSQL, schema built by Alembic.

PostgreSQL: 127.0.0.1:5432, user postgres, a scratch database created per test session
(override with TIERWISE_TEST_PG_URL, an admin URL). When the server is unreachable the Postgres
half is skipped with a message, except under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.service import Evaluator
from router.db import make_engine, session_factory
from router.policy import Policy, builtin_policy_path, load_policy
from router.service import Router
from router.table import apply_policy
from tierwise import migrate
from tierwise.app import create_app
from tierwise.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "datasets"
SHARED_DATA = ROOT.parent / "shared" / "data"
PG_ADMIN = os.environ.get("TIERWISE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = (
    "lane_item",
    "lane_upstream",
    "lane_batch",
    "lane_file",
    "cache_guard_event",
    "cache_class_state",
    "cache_lookup",
    "cache_entry",
    "grading_cost",
    "grading_batch_item",
    "grading_batch",
    "escalation_event",
    "grade",
    "sample",
    "outcome",
    "decision",
    "routing_entry",
    "policy",
    "price",
    "model",
    "routing_state",
    "rule_state",
    "job_run",
    "task_class",
    "api_key",
    "grading_budget",
    "compression_day",
    "compression_probe",
    "compression_state",
    "compression_event",
)


def _pg_admin(sql: str) -> None:
    """Run one admin statement, on its own loop in a worker thread (fixtures may be inside one)."""

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result()


def create_pg_database(prefix: str) -> str:
    """Create an empty PostgreSQL database ``<prefix>_<pid>_<6 hex>``; its ``postgresql+asyncpg``
    URL. Skips the calling test when the server is unreachable (fails it under CI). Drop it with
    :func:`drop_pg_database`."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL not reachable at {PG_ADMIN}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI requires it)")
        pytest.skip(message)
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    """Drop the database :func:`create_pg_database` made, closing its open connections."""
    name = url.rsplit("/", 1)[1]
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def _own_spool_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test's commands and servers spool to a folder of their own (a spool folder is held
    by one process at a time, and the default is the working directory's)."""
    monkeypatch.setenv("TIERWISE_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database at Alembic head for this test session."""
    url = create_pg_database("tierwise_test")
    migrate.upgrade(url)
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at Alembic head, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def _truncate(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        await conn.execute(
            sa.text("INSERT INTO routing_state (id, version, updated_at) VALUES (1, 0, now())")
        )
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """An empty database at Alembic head, on the parametrised backend."""
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "tierwise.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_url")
        await _truncate(url)
        yield url


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


def policy_named(name: str) -> Policy:
    return load_policy(builtin_policy_path(name))


async def apply(sessions: async_sessionmaker[AsyncSession], policy: Policy) -> int:
    async with sessions() as session:
        result = await apply_policy(session, policy)
        await session.commit()
    return result.version


def make_settings(database_url: str, **overrides: object) -> Settings:
    base = Settings(
        database_url=database_url,
        run_scheduler=False,
        datasets_dir=DATASETS,
        snapshot_poll_s=0.05,
        decision_flush_s=0.05,
        # A spool folder of its own per service (a folder is held by one process at a time).
        spool_dir=Path(tempfile.mkdtemp(prefix="tierwise-spool-")),
    )
    return base.model_copy(update=overrides)


class Service:
    """A running app with an HTTP client over ASGI."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def router(self) -> Router:
        return self.app.state.router  # type: ignore[no-any-return]

    @property
    def evaluator(self) -> Evaluator:
        return self.app.state.evaluator  # type: ignore[no-any-return]

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.app.state.sessions  # type: ignore[no-any-return]


@asynccontextmanager
async def running_service(
    database_url: str, policy: str | None = "default", **overrides: object
) -> AsyncIterator[Service]:
    """Apply a built-in policy (unless None), start the app's lifespan, yield a client."""
    if policy is not None:
        engine = make_engine(database_url)
        await apply(session_factory(engine), policy_named(policy))
        await engine.dispose()
    app = create_app(make_settings(database_url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tierwise") as client:
            yield Service(app, client)


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[Service]:
    """The service on the default policy, over ASGI."""
    async with running_service(database_url, "default") as svc:
        yield svc
