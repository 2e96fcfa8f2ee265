"""Day partitions of ``decision`` and ``outcome`` on PostgreSQL (revision 0011): created ahead by
a job, dropped whole past the retention setting. SQLite keeps plain tables; the job does nothing
there.

``decision`` is partitioned by range of ``created_at``, ``outcome`` by its decision's time
(``decided_at``), one partition per UTC day, named ``<table>_pYYYYMMDD``, plus
``<table>_default``, which takes a row no day partition covers so an insert never fails. The
job (:func:`maintain_partitions`):

1. moves rows that landed in the default partition into day partitions of their own: it
   creates the day's table, copies the rows over and deletes them from the default, then
   attaches the table (``ATTACH PARTITION`` takes a SHARE UPDATE EXCLUSIVE lock on the parent,
   so inserts go on; PostgreSQL docs, "Partition Maintenance", 5.11.2.2);
2. creates the partitions of today and the next ``ahead_days`` days the same way;
3. with ``retention_days`` set, drops every day partition that ends at or before
   ``today - retention_days`` (``DROP TABLE``: no row-by-row delete, no vacuum debt) and
   deletes such rows from the default partition. Samples and grades of those decisions are
   kept (they reference no partition), and so are their costs' grades; the decisions' rows and
   their outcomes are gone, so the books and ``GET /v1/costs`` cover the retained days only.

All of it runs in one transaction under the job's advisory lock, once per tick across workers
(its ``job_run`` row).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation._repository import claim_tick, record_tick_result
from router.db import dialect_of, utcnow
from router.dialect import try_advisory_lock

log = logging.getLogger(__name__)

JOB = "partitions"
# (table, partition key): revision 0011's partitioned tables
PARTITIONED = (("decision", "created_at"), ("outcome", "decided_at"))
_DAY = re.compile(r"_p(\d{8})$")


@dataclass
class PartitionRun:
    """What one run did, by table: day partitions ``created`` and ``dropped`` (dates), rows
    ``moved`` out of the default partition and ``expired`` rows deleted from it.
    ``skipped``: not PostgreSQL, or another worker ran this tick."""

    skipped: bool = False
    reason: str = ""
    created: dict[str, list[date]] = field(default_factory=dict)
    dropped: dict[str, list[date]] = field(default_factory=dict)
    moved: dict[str, int] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        def days(d: dict[str, list[date]]) -> dict[str, list[str]]:
            return {t: [x.isoformat() for x in v] for t, v in d.items() if v}

        return {
            "created": days(self.created),
            "dropped": days(self.dropped),
            "moved": {t: n for t, n in self.moved.items() if n},
            "expired": {t: n for t, n in self.expired.items() if n},
        }


def _bound(day: date) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()


async def day_partitions(conn: AsyncConnection, table: str) -> dict[date, str]:
    """``table``'s day partitions by UTC day (the default partition is not among them)."""
    rows = await conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :table"
        ),
        {"table": table},
    )
    found: dict[date, str] = {}
    for (name,) in rows:
        m = _DAY.search(name)
        if m and name.startswith(f"{table}_p"):
            found[datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC).date()] = name
    return found


async def create_day_partition(conn: AsyncConnection, table: str, key: str, day: date) -> int:
    """Create and attach ``table``'s partition of ``day``, moving its rows out of the default
    partition first; the rows moved."""
    name, lo, hi = f"{table}_p{day:%Y%m%d}", _bound(day), _bound(day + timedelta(days=1))
    where = f"{key} >= '{lo}' AND {key} < '{hi}'"
    await conn.execute(sa.text(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)"))
    moved = await conn.execute(
        sa.text(
            f"WITH gone AS (DELETE FROM {table}_default WHERE {where} RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM gone"
        )
    )
    # The CHECK lets ATTACH skip its scan of the new table (PostgreSQL docs, 5.11.2.2).
    await conn.execute(sa.text(f"ALTER TABLE {name} ADD CONSTRAINT {name}_bound CHECK ({where})"))
    await conn.execute(
        sa.text(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')")
    )
    await conn.execute(sa.text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bound"))
    return int(moved.rowcount or 0)


async def maintain(
    conn: AsyncConnection,
    run: PartitionRun,
    *,
    today: date,
    ahead_days: int,
    retention_days: int | None,
) -> None:
    """One pass over every partitioned table (see the module doc); the caller commits."""
    for table, key in PARTITIONED:
        have = await day_partitions(conn, table)
        stray = (
            await conn.execute(
                sa.text(f"SELECT DISTINCT (({key}) AT TIME ZONE 'UTC')::date FROM {table}_default")
            )
        ).scalars()
        cutoff = None if retention_days is None else today - timedelta(days=retention_days)
        wanted = {today + timedelta(days=i) for i in range(ahead_days + 1)}
        wanted |= {d for d in stray if cutoff is None or d >= cutoff}
        run.created[table], run.moved[table] = [], 0
        for day in sorted(wanted - set(have)):
            run.moved[table] += await create_day_partition(conn, table, key, day)
            run.created[table].append(day)
        run.dropped[table], run.expired[table] = [], 0
        if cutoff is None:
            continue
        for day, name in sorted(have.items()):
            if day < cutoff:
                await conn.execute(sa.text(f"DROP TABLE {name}"))
                run.dropped[table].append(day)
        expired = await conn.execute(
            sa.text(f"DELETE FROM {table}_default WHERE {key} < '{_bound(cutoff)}'")
        )
        run.expired[table] = int(expired.rowcount or 0)


async def maintain_partitions(
    sessions: async_sessionmaker[AsyncSession],
    *,
    tick: datetime | None = None,
    worker: str = "",
    now: datetime | None = None,
    ahead_days: int = 7,
    retention_days: int | None = None,
) -> PartitionRun:
    """Create the day partitions of today and the next ``ahead_days`` days (and of any day whose
    rows sit in a default partition), and with ``retention_days`` (days; None = keep every day)
    drop the day partitions older than that, in one transaction. A no-op on SQLite.

    ``tick`` (scheduled runs): claimed once across workers (advisory lock, ``job_run``)."""
    run = PartitionRun()
    async with sessions() as session:
        if dialect_of(session) != "postgresql":
            run.skipped, run.reason = True, "not PostgreSQL: tables are not partitioned"
            return run
        if not await try_advisory_lock(session, JOB) or (
            tick is not None and not await claim_tick(session, JOB, tick, worker)
        ):
            await session.rollback()
            run.skipped, run.reason = True, "another worker runs this tick"
            return run
        today = (now or utcnow()).astimezone(UTC).date()
        conn = await session.connection()
        await maintain(conn, run, today=today, ahead_days=ahead_days, retention_days=retention_days)
        if tick is not None:
            await record_tick_result(session, JOB, tick, run.summary())
        await session.commit()
    summary = run.summary()
    if any(summary.values()):
        log.info("partitions: %s", summary)
    return run
