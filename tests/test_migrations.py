"""Migrations on populated databases, on SQLite and PostgreSQL, from an empty database.

The walk takes the revision list from Alembic, so a new migration is walked as soon as it exists.
At each revision it upgrades one step, checks that every row written before is still there value
for value, and seeds each table that has no rows yet from ``SEEDERS`` (one entry per table name;
a table without one fails the walk, so a migration that adds a table adds its seeder here). Then
it downgrades one step at a time to base, checking each step gives back the tables and columns
the upgrade saw at that revision with the rows still in them, and upgrades to head again.

The probes put one throwaway revision on top of head, in a copy of the scripts folder that keeps
the real ``env.py``: a batch alter (a column and a unique constraint) of ``decision``, which
``outcome`` and ``sample`` reference on SQLite and which SQLite alters by recreating the table
(on PostgreSQL ``decision`` is partitioned by day and nothing references it: revision 0011); and
a step that writes a row whose foreign key points nowhere.

On PostgreSQL a partition (``decision_p20240501``, ``decision_default``) is not a table of the
schema: reflection leaves partitions out, and their rows are read through their parent.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from router.db import make_engine
from tests.conftest import create_pg_database, drop_pg_database
from tierwise import migrate
from tierwise.migrate import MigrationError

Row = dict[str, Any]
Schema = dict[str, list[str]]  # table -> its column names, sorted
Rows = dict[str, list[Row]]  # table -> its rows, in primary-key order

AT = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
CLASS = "summarise/short"

# The rows each table gets when it first exists and is empty, with the columns it has at that
# revision. Parents are seeded first, so a row may refer to another table's (dec-1, small-model).
SEEDERS: dict[str, list[Row]] = {
    # Filled by revision 0008 from the model rows; this row only seeds a table left empty.
    "price": [
        {
            "id": 1,
            "model": "small-model",
            "effective_from": AT,
            "input_nusd_per_mtok": 150_000_000,
            "cached_input_nusd_per_mtok": 75_000_000,
            "cache_write_nusd_per_mtok": None,
            "output_nusd_per_mtok": 600_000_000,
            "embedding_input_nusd_per_mtok": None,
            "batch_discount": 0.5,
            "created_at": AT,
        }
    ],
    "model": [
        {
            "name": "small-model",
            "provider": "openai",
            "input_usd_per_mtok": 0.15,
            "cached_input_usd_per_mtok": 0.075,
            "cache_write_usd_per_mtok": None,
            "output_usd_per_mtok": 0.6,
            "batch_discount": 0.5,
            "updated_at": AT,
        }
    ],
    "policy": [
        {
            "id": 1,
            "name": "default",
            "body": 'name = "default"\n',
            "table_version": 1,
            "applied_at": AT,
        }
    ],
    # 0001 writes the one row itself; this is for a history that stops doing so.
    "routing_state": [{"id": 1, "version": 1, "updated_at": AT}],
    "routing_entry": [
        {
            "task_class": CLASS,
            "tier": "standard",
            "model": "small-model",
            "status": "baseline",
            "version": 1,
            "changed_at": AT,
        }
    ],
    "decision": [
        {
            "id": f"dec-{i}",
            "task_type": "summarise",
            "task_class": CLASS,
            "tier": "standard",
            "model": "small-model",
            "provider": "openai",
            "table_version": 1,
            "sampled": i == 1,
            "input_tokens": 120 * i,
            "has_tool_calls": False,
            "meta": {"item_id": f"q-{i}", "tags": ["a", "b"]} if i == 1 else None,
            "created_at": AT,
        }
        for i in (1, 2)
    ],
    "outcome": [
        {
            "decision_id": f"dec-{i}",
            "task_class": CLASS,
            "served_model": "small-model",
            "status": "ok",
            "latency_ms": 812.5,
            "input_tokens": 120 * i,
            "cached_input_tokens": 20,
            "cache_write_tokens": 0,
            "output_tokens": 48,
            "reasoning_tokens": 0,
            "cost_usd": 4.68e-05,
            "usage_raw": {"prompt_tokens": 120 * i, "prompt_tokens_details": {"cached": 20}},
            "decided_at": AT,  # from revision 0011
            "created_at": AT,
        }
        for i in (1, 2)
    ],
    "sample": [
        {
            "decision_id": "dec-1",
            "task_class": CLASS,
            "model": "small-model",
            "input_messages": [{"role": "user", "content": "Summarise: the cat sat."}],
            "output_text": "A cat sat.",
            "meta": {"item_id": "q-1"},
            "status": "graded",
            "attempts": 1,
            "lease_until": None,
            "decided_at": AT,
            "created_at": AT,
        }
    ],
    "grade": [
        {
            "id": 1,
            "decision_id": "dec-1",
            "task_class": CLASS,
            "model": "small-model",
            "reference_model": "large-model",
            "grader": "exact",
            "verdict": "agree",
            "score": 1.0,
            "parse_status": "ok",
            "raw_output": "A cat sat.",
            "input_tokens": 300,
            "output_tokens": 5,
            "cost_usd": 0.0009,
            "decided_at": AT,
            "created_at": AT,
        }
    ],
    "grading_batch": [
        {
            "id": 1,
            "provider": "openai",
            "model": "large-model",
            "provider_batch_id": "batch_1",
            "status": "ended",
            "provider_status": "completed",
            "submitted_at": AT,
            "deadline": AT,
            "completed_at": AT,
            "requests": 1,
            "succeeded": 1,
            "errored": 0,
            "expired": 0,
        }
    ],
    "grading_batch_item": [
        {
            "id": 1,
            "batch_id": 1,
            "custom_id": "g-1-1-reference",
            "decision_id": "dec-1",
            "stage": 1,
            "key": "reference",
            "lease_until": AT,
            "status": "answered",
            "response": {"text": "A cat sat.", "usage": {"input_tokens": 300}},
        }
    ],
    "lane_file": [
        {
            "id": "file-1",
            "purpose": "batch",
            "filename": "in.jsonl",
            "size": 3,
            "content": b"{}\n",
            "caller": None,
            "batch_id": None,
            "created_at": AT,
        }
    ],
    "lane_batch": [
        {
            "id": "batch_1",
            "kind": "batch",
            "caller": None,
            "input_file_id": "file-1",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "meta": {"job": "nightly"},
            "status": "in_progress",
            "total": 1,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": AT,
            "expires_at": AT,
            "cancelling_at": None,
            "ended_at": None,
            "webhook_url": None,
            "webhook_state": None,
            "webhook_attempts": 0,
        }
    ],
    "lane_upstream": [
        {
            "id": 1,
            "key": "0" * 64,
            "provider": "openai",
            "model": "small-model",
            "provider_batch_id": "batch_up_1",
            "status": "submitted",
            "provider_status": "in_progress",
            "items": 1,
            "cancel_requested": False,
            "created_at": AT,
            "submitted_at": AT,
            "ended_at": None,
        }
    ],
    "lane_item": [
        {
            "id": 1,
            "batch_id": "batch_1",
            "custom_id": "request-1",
            "line": 1,
            "decision_id": "dec-1",
            "task_class": CLASS,
            "model": "small-model",
            "provider": "openai",
            "body": {"model": "tierwise/x", "messages": [{"role": "user", "content": "hi"}]},
            "status": "submitted",
            "attempts": 1,
            "upstream_id": 1,
            "response": None,
            "error": None,
            "realtime_cost_nusd": None,
            "queued_at": AT,
            "not_before": None,
            "ended_at": None,
        }
    ],
    "grading_cost": [
        {
            "id": 1,
            "provider_batch_id": "batch_1",
            "custom_id": "g-1-1-reference",
            "decision_id": "dec-1",
            "model": "large-model",
            "input_tokens": 300,
            "output_tokens": 5,
            "cost_nusd": 450_000,
            "created_at": AT,
        }
    ],
    "escalation_event": [
        {
            "id": 1,
            "task_class": CLASS,
            "from_model": "small-model",
            "to_model": "large-model",
            "from_status": "baseline",
            "to_status": "escalated",
            "actor": "evaluator",
            "reason": "disagreement above threshold",
            "rule": "sequential(p0=0.1, p1=0.3)",
            "n": 40,
            "k": 12,
            "rate": 0.3,
            "ci_low": 0.18,
            "ci_high": 0.45,
            "threshold": 0.2,
            "confidence": 0.95,
            "table_version": 2,
            "window_start": AT,
            "created_at": AT,
        }
    ],
    "rule_state": [
        {
            "task_class": CLASS,
            "model": "small-model",
            "window_start": AT,
            "state": {"v": 1, "n": 40, "k": 12},
            "action": "continue",
            "reason": "",
            "updated_at": AT,
            "counts": None,  # from revision 0011
        }
    ],
    "job_run": [
        {
            "id": 1,
            "job": "grading",
            "tick": AT,
            "worker": "host-1:4242",
            "started_at": AT,
            "result": {"graded": 3, "failed": 0},
        }
    ],
    "task_class": [{"name": "other-class", "first_routed_at": AT}],
    "api_key": [
        {
            "id": "k1a2b3c4",
            "name": "search-team",
            "secret_hash": "0" * 64,
            "scopes": ["route", "outcomes"],
            "created_at": AT,
            "revoked_at": None,
        }
    ],
    "cache_entry": [
        {
            "id": "e" * 32,
            "namespace": "key:k1",
            "task_class": CLASS,
            "model": "small-model",
            "route_version": 1,
            "scope": "s" * 64,
            "key_hash": "k" * 64,
            "embedder": "wordllama/l2_supercat-256",
            "dim": 3,
            "embedding": np.array([0.6, 0.8, 0.0], dtype=np.float32).tobytes(),
            "query_text": "Summarise: the cat sat.",
            "answer_text": "A cat sat.",
            "response": {"choices": [{"message": {"content": "A cat sat."}}]},
            "usage": {"prompt_tokens": 10, "completion_tokens": 4},
            "min_similarity": None,
            "created_at": AT,
            "expires_at": AT,
        }
    ],
    "cache_lookup": [
        {
            "decision_id": "dec-1",
            "task_class": CLASS,
            "namespace": "key:k1",
            "model": "small-model",
            "route_version": 1,
            "outcome": "hit",
            "reason": None,
            "match": "semantic",
            "similarity": 0.93,
            "threshold": 0.92,
            "entry_id": "e" * 32,
            "sampled": True,
            "saved_nusd": 27_000,
            "embedding_tokens": 5,
            "embedding_nusd": 0,
            "created_at": AT,
        }
    ],
    "cache_class_state": [
        {
            "task_class": CLASS,
            "threshold": 0.945,
            "enabled": True,
            "model": "small-model",
            "route_version": 1,
            "updated_at": AT,
        }
    ],
    "cache_guard_event": [
        {
            "id": 1,
            "task_class": CLASS,
            "model": "small-model",
            "action": "raise",
            "from_threshold": 0.92,
            "to_threshold": 0.945,
            "k": 3,
            "n": 40,
            "rate": 0.075,
            "lower": 0.026,
            "upper": 0.199,
            "confidence": 0.95,
            "target": 0.01,
            "reason": "3 false of 40 graded hits",
            "evidence": [{"threshold": 0.92, "k": 3, "n": 40, "upper": 0.199}],
            "created_at": AT,
        }
    ],
    "grading_budget": [
        {
            "scope": "*",
            "day": AT.date(),
            "limit_nusd": 5_000_000_000,
            "reserved_nusd": 0,
            "spent_nusd": 1_250_000_000,
            "updated_at": AT,
        }
    ],
    "compression_day": [
        {
            "day": AT.replace(hour=0, minute=0, second=0, microsecond=0),
            "task_class": CLASS,
            "model": "small-model",
            "calls": 3,
            "compressed": 2,
            "guarded": 1,
            "tokens_before": 6_000,
            "tokens_after": 3_100,
            "saved_nusd": 435_000,
        }
    ],
    "compression_probe": [
        {
            "decision_id": "dec-1",
            "task_class": CLASS,
            "model": "small-model",
            "level": 0,
            "ratio": 0.5,
            "pipeline": ["redundancy", "query"],
            "guard": False,
            "trial": False,
            "input_messages": [{"role": "user", "content": "Context. Question?"}],
            "output_text": "An answer.",
            "status": "graded",
            "verdict": "agree",
            "score": 8.0,
            "parse_status": "ok",
            "raw_output": "Rating: [[8]]",
            "error": None,
            "attempts": 0,
            "grade_input_tokens": 900,
            "grade_output_tokens": 40,
            "grade_cost_nusd": 159_000,
            "created_at": AT,
            "graded_at": AT,
        }
    ],
    "compression_state": [
        {
            "task_class": CLASS,
            "level": 1,
            "rule_state": {"v": 1, "n": 40, "k": 6},
            "changed_at": AT,
            "updated_at": AT,
        }
    ],
    "compression_event": [
        {
            "id": 1,
            "task_class": CLASS,
            "at": AT,
            "from_level": 0,
            "to_level": 1,
            "from_ratio": 0.5,
            "to_ratio": 0.75,
            "n": 40,
            "k": 6,
            "rate": 0.15,
            "ci_low": 0.071,
            "ci_high": 0.291,
            "rule": "bernoulli-cusum(p0=0.02, p1=0.05)",
            "reason": "S = 5.1 of h = 4.5",
            "evidence": {"rule_state": {"n": 40, "k": 6}},
        }
    ],
}


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables, not even Alembic's) on the parametrised backend."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    url = create_pg_database("tierwise_migrations")
    try:
        yield url
    finally:
        drop_pg_database(url)


@asynccontextmanager
async def _connect(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection on a fresh engine, so no cached statement outlives a migration."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


def _reflect(conn: sa.Connection) -> sa.MetaData:
    meta = sa.MetaData()
    partitions: set[str] = set()
    if conn.dialect.name == "postgresql":
        partitions = set(
            conn.execute(sa.text("SELECT relname FROM pg_class WHERE relispartition")).scalars()
        )
    meta.reflect(conn, only=lambda name, _: name not in partitions)
    if "alembic_version" in meta.tables:
        meta.remove(meta.tables["alembic_version"])
    return meta


def _normal(value: Any) -> Any:
    """Timestamps as aware UTC (SQLite gives them back naive)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _read(conn: sa.Connection, table: sa.Table) -> list[Row]:
    order = list(table.primary_key.columns)
    rows = conn.execute(sa.select(table).order_by(*order)).mappings()
    return [{k: _normal(v) for k, v in row.items()} for row in rows]


async def _schema(url: str) -> Schema:
    async with _connect(url) as conn:
        meta = await conn.run_sync(_reflect)
    return {name: sorted(t.columns.keys()) for name, t in sorted(meta.tables.items())}


async def _rows(url: str) -> Rows:
    async with _connect(url) as conn:
        meta = await conn.run_sync(_reflect)
        return {name: await conn.run_sync(_read, t) for name, t in sorted(meta.tables.items())}


async def _current(url: str) -> str | None:
    async with _connect(url) as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def _common(a: Schema, b: Schema) -> Schema:
    """The tables both schemas have, with the columns both give them."""
    return {t: [c for c in a[t] if c in b[t]] for t in a if t in b}


def _projected(rows: Rows, schema: Schema) -> Rows:
    """``rows`` of the tables in ``schema``, with only the columns ``schema`` gives them."""
    return {
        table: [{k: v for k, v in row.items() if k in schema[table]} for row in table_rows]
        for table, table_rows in rows.items()
        if table in schema
    }


async def _seed_empty_tables(url: str, revision: str, seeders: dict[str, list[Row]]) -> None:
    """Insert ``seeders[table]`` into each table without rows (parents first), and check they
    read back exactly (the columns the table has at ``revision``: a seeder row may name columns
    a later revision dropped). Fails the test if any table has no seeder."""
    async with _connect(url) as conn:
        meta = await conn.run_sync(_reflect)
        missing = sorted(set(meta.tables) - set(seeders))
        if missing:
            pytest.fail(
                f"no seeder for tables {missing} at revision {revision}: add rows for them to "
                "SEEDERS in tests/test_migrations.py"
            )
        for table in meta.sorted_tables:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar()
            if count:
                continue
            seeded = [
                {k: v for k, v in row.items() if k in table.columns} for row in seeders[table.name]
            ]
            await conn.execute(sa.insert(table), seeded)
            stored = await conn.run_sync(_read, table)
            assert [{k: row[k] for k in seeded[0]} for row in stored] == seeded
        await conn.commit()


def _revisions(cfg: Config) -> list[tuple[str, str | None]]:
    """(revision, the one it revises or None) from base to head; the history must be linear."""
    scripts = ScriptDirectory.from_config(cfg)
    assert len(scripts.get_heads()) == 1, f"more than one head: {scripts.get_heads()}"
    walked = []
    for script in reversed(list(scripts.walk_revisions("base", "heads"))):
        assert not isinstance(script.down_revision, tuple | list), f"{script.revision} merges"
        walked.append((script.revision, script.down_revision))
    return walked


async def test_every_migration_keeps_the_rows_of_a_populated_database(empty_url: str) -> None:
    cfg = migrate.alembic_config(empty_url)
    revisions = _revisions(cfg)
    schemas: dict[str | None, Schema] = {None: {}}
    seen: set[str] = set()
    before: Rows = {}
    for revision, down in revisions:
        command.upgrade(cfg, revision)
        assert await _current(empty_url) == revision
        schema = schemas[revision] = await _schema(empty_url)
        seen |= set(schema)
        # Rows of a table this step dropped are gone with it; every other row is intact.
        kept = _common(schemas[down], schema)
        assert _projected(await _rows(empty_url), kept) == _projected(before, kept)
        await _seed_empty_tables(empty_url, revision, SEEDERS)
        before = await _rows(empty_url)
        assert all(before[table] for table in schema), f"an empty table at {revision}"
    assert sorted(set(SEEDERS) - seen) == [], "seeders for tables no revision has"

    for revision, down in reversed(revisions):
        command.downgrade(cfg, down or "base")
        assert await _current(empty_url) == down
        schema = await _schema(empty_url)
        assert schema == schemas[down], f"downgrade of {revision} did not give back {down}"
        after = await _rows(empty_url)
        kept = _common(schemas[revision], schema)
        assert _projected(after, kept) == _projected(before, kept)
        assert all(after[table] for table in schema), f"an empty table at {down}"
        before = after

    command.upgrade(cfg, "head")
    assert await _current(empty_url) == revisions[-1][0]
    assert await _schema(empty_url) == schemas[revisions[-1][0]]


async def test_a_table_without_a_seeder_fails_the_walk(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    head = await _current(empty_url)
    assert head is not None
    seeders = {table: rows for table, rows in SEEDERS.items() if table != "job_run"}
    with pytest.raises(pytest.fail.Exception) as failed:
        await _seed_empty_tables(empty_url, head, seeders)
    assert str(failed.value) == (
        f"no seeder for tables ['job_run'] at revision {head}: add rows for them to SEEDERS in "
        "tests/test_migrations.py"
    )


# ---- probes: one throwaway revision on top of head ---------------------------------------------

PROBE_SCRIPT = '''"""probe written by tests/test_migrations.py"""

import sqlalchemy as sa
from alembic import op

revision = "probe"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''

BATCH_UPGRADE = """\
    with op.batch_alter_table("decision") as batch_op:
        batch_op.add_column(
            sa.Column("probe", sa.String(16), nullable=False, server_default="kept")
        )
        batch_op.create_unique_constraint("uq_decision_probe", ["id", "created_at", "probe"])"""

BATCH_DOWNGRADE = """\
    with op.batch_alter_table("decision") as batch_op:
        batch_op.drop_constraint("uq_decision_probe", type_="unique")
        batch_op.drop_column("probe")"""

ORPHAN_UPGRADE = """\
    op.execute(
        "INSERT INTO grade (id, decision_id, task_class, model, reference_model, grader, "
        "verdict, parse_status, raw_output, input_tokens, output_tokens, decided_at, "
        "created_at, shadow) VALUES (7, 'no-such-sample', 'c', 'm', 'r', 'exact', 'agree', "
        "'ok', '', 0, 0, '2024-05-01 12:00:00', '2024-05-01 12:00:00', false)"
    )"""


def _with_probe(url: str, tmp_path: Path, upgrade: str, downgrade: str = "    pass") -> Config:
    """Alembic config for ``url`` over a copy of the scripts with revision ``probe`` on head."""
    head = ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()
    scripts = tmp_path / "alembic"
    shutil.copytree(migrate.ROOT / "alembic", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    probe = PROBE_SCRIPT.format(head=head, upgrade=upgrade, downgrade=downgrade)
    (scripts / "versions" / "probe.py").write_text(probe, encoding="utf-8")
    cfg = migrate.alembic_config(url)
    cfg.set_main_option("script_location", str(scripts))
    return cfg


async def _populated_at_head(url: str) -> tuple[str, Rows]:
    """Upgrade ``url`` to head and seed every table; (head, the rows)."""
    migrate.upgrade(url)
    head = await _current(url)
    assert head is not None
    await _seed_empty_tables(url, head, SEEDERS)
    return head, await _rows(url)


async def _execute(url: str, *statements: str) -> None:
    async with _connect(url) as conn:
        for statement in statements:
            await conn.execute(sa.text(statement))
        await conn.commit()


async def test_a_batch_alter_of_a_referenced_table_keeps_every_row(
    empty_url: str, backend: str, tmp_path: Path
) -> None:
    head, before = await _populated_at_head(empty_url)
    cfg = _with_probe(empty_url, tmp_path, BATCH_UPGRADE, BATCH_DOWNGRADE)

    command.upgrade(cfg, "probe")
    assert await _current(empty_url) == "probe"
    schema = await _schema(empty_url)
    assert schema["decision"] == sorted([*before["decision"][0], "probe"])
    after = await _rows(empty_url)
    assert [row["probe"] for row in after["decision"]] == ["kept", "kept"]
    assert _projected(after, await _schema(empty_url)) == after
    assert {
        t: [{k: r[k] for k in rows[0]} for r in after[t]] for t, rows in before.items()
    } == before
    # The foreign keys of outcome and sample still point at decision and are enforced (SQLite;
    # on PostgreSQL decision is partitioned and not referenced: revision 0011).
    if backend == "sqlite":
        with pytest.raises(IntegrityError):
            await _execute(
                empty_url,
                "INSERT INTO outcome (decision_id, task_class, served_model, status, "
                "input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, "
                "reasoning_tokens, decided_at, created_at) VALUES ('no-such-decision', 'c', "
                "'m', 'ok', 0, 0, 0, 0, 0, '2024-05-01 12:00:00', '2024-05-01 12:00:00')",
            )

    command.downgrade(cfg, head)
    assert await _current(empty_url) == head
    assert await _rows(empty_url) == before


async def test_a_step_that_breaks_a_foreign_key_is_rolled_back(
    empty_url: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head, before = await _populated_at_head(empty_url)
    cfg = _with_probe(empty_url, tmp_path, ORPHAN_UPGRADE)
    monkeypatch.setattr(migrate, "alembic_config", lambda url: cfg)

    with pytest.raises(MigrationError) as failed:
        migrate.upgrade(empty_url, "probe")
    if backend == "sqlite":
        assert failed.value.message == (
            "migration rolled back: rows break a foreign key: grade rowid 7 -> sample"
        )
    else:
        assert failed.value.message == (
            'migration rolled back: insert or update on table "grade" violates foreign key '
            'constraint "grade_decision_id_fkey"'
        )
    assert await _current(empty_url) == head
    assert await _rows(empty_url) == before


async def test_a_leftover_batch_copy_is_dropped_and_the_retry_succeeds(
    empty_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    head, before = await _populated_at_head(empty_url)
    # What a batch alter of decision that failed half-way leaves: a partial copy.
    await _execute(
        empty_url,
        "CREATE TABLE _alembic_tmp_decision (id VARCHAR(64) NOT NULL PRIMARY KEY)",
        "INSERT INTO _alembic_tmp_decision (id) VALUES ('dec-1')",
    )
    cfg = _with_probe(empty_url, tmp_path, BATCH_UPGRADE, BATCH_DOWNGRADE)

    with caplog.at_level(logging.WARNING, logger="tierwise.migrate"):
        command.upgrade(cfg, "probe")
    # This logger's records only: another test may have left the root logger at INFO.
    mine = [r for r in caplog.records if r.name == "tierwise.migrate"]
    assert [(r.levelname, r.getMessage()) for r in mine] == [
        (
            "WARNING",
            "dropping _alembic_tmp_decision, left from a failed batch migration of decision "
            "(decision is intact)",
        )
    ]
    assert await _current(empty_url) == "probe"
    assert sorted(await _schema(empty_url)) == sorted(before)
    after = await _rows(empty_url)
    assert [row["id"] for row in after["decision"]] == ["dec-1", "dec-2"]
    command.downgrade(cfg, head)
    assert await _rows(empty_url) == before


async def test_a_leftover_batch_copy_of_a_missing_table_is_kept_and_refused(
    empty_url: str,
) -> None:
    head, _ = await _populated_at_head(empty_url)
    await _execute(empty_url, "CREATE TABLE _alembic_tmp_ghost (id INTEGER PRIMARY KEY)")

    with pytest.raises(MigrationError) as failed:
        migrate.upgrade(empty_url)
    assert failed.value.message == (
        "_alembic_tmp_ghost is left from a failed batch migration of ghost, but ghost does not "
        "exist, so it may hold ghost's only rows: restore ghost from it (or drop it) and "
        "migrate again"
    )
    assert "_alembic_tmp_ghost" in await _schema(empty_url)
    assert await _current(empty_url) == head


async def test_job_state_moves_out_of_caller_metadata_and_back(empty_url: str) -> None:
    """0005 carries the held-out item id and a first attempt the job recorded out of the
    sample's metadata; a forged or malformed ``first_attempt`` stays the caller's data and does
    not stop the upgrade; the downgrade puts the job's state back where the old code reads it."""
    migrate.upgrade(empty_url, "0004")
    decisions = [{**SEEDERS["decision"][0], "id": f"m-{i}", "meta": None} for i in range(3)]
    base = {**SEEDERS["sample"][0], "meta": None}
    job_attempt = {
        "verdict": "refused",
        "parse_status": "refused",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": 0.0013,
    }
    samples = [
        {
            **base,
            "decision_id": "m-0",
            "status": "queued",
            "attempts": 1,
            "meta": {"item_id": "q-0", "first_attempt": job_attempt},
        },
        {
            **base,
            "decision_id": "m-1",
            "status": "queued",
            "attempts": 0,  # never claimed: forged
            "meta": {"first_attempt": {**job_attempt, "cost_usd": 42}},
        },
        {
            **base,
            "decision_id": "m-2",
            "status": "graded",
            "attempts": 1,
            "meta": {"first_attempt": {"input_tokens": None}},
        },  # malformed
    ]
    async with _connect(empty_url) as conn:
        meta = await conn.run_sync(_reflect)
        await conn.execute(sa.insert(meta.tables["decision"]), decisions)
        await conn.execute(sa.insert(meta.tables["sample"]), samples)
        await conn.commit()

    migrate.upgrade(empty_url, "0005")
    after = {r["decision_id"]: r for r in (await _rows(empty_url))["sample"]}
    assert (after["m-0"]["item_id"], after["m-0"]["earlier_verdict"]) == ("q-0", "refused")
    assert (after["m-0"]["earlier_input_tokens"], after["m-0"]["earlier_cost_usd"]) == (100, 0.0013)
    assert after["m-0"]["meta"] == {"item_id": "q-0"}
    for forged in ("m-1", "m-2"):  # the caller's data, kept as sent; no spend booked
        assert after[forged]["earlier_verdict"] is None
        assert after[forged]["meta"] == samples[int(forged[-1])]["meta"]

    migrate.upgrade(empty_url, "0006")
    command.downgrade(migrate.alembic_config(empty_url), "0004")
    back = {r["decision_id"]: r for r in (await _rows(empty_url))["sample"]}
    assert back["m-0"]["meta"]["item_id"] == "q-0"
    assert back["m-0"]["meta"]["first_attempt"]["input_tokens"] == 100
    assert back["m-1"]["meta"] == samples[1]["meta"]
