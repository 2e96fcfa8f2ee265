"""The grading queue: claim queued samples (or ones whose lease ran out) with a lease that is also
the write-back's fencing token."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import utcnow
from router.dialect import skip_locked
from router.models import Sample

log = logging.getLogger(__name__)

TRANSIENT_BACKOFF_S = 30.0
"""Back-off after a transient provider failure, s, times the sample's claims so far."""

MAX_TRANSIENT_FAILURES = 3
"""Claims after which a sample whose provider keeps failing transiently is failed for good."""

MAX_CLAIMS = 5
"""Claims of one sample before it is failed for good, whatever ended them (a worker that died
holding it, lost leases, transient errors)."""


async def claim_samples(
    session: AsyncSession,
    *,
    limit: int,
    lease_s: float,
    now: datetime | None = None,
    skip_classes: Collection[str] = (),
    only_classes: Collection[str] | None = None,
) -> list[Sample]:
    """Claim up to ``limit`` queued samples (or claimed ones whose lease expired) for
    ``lease_s`` seconds, and commit. ``skip_classes``: task classes left to another job (the
    real-time job skips batch-graded classes); ``only_classes``: claim from these alone (the
    batch submit job). A sample whose lease has expired ``MAX_CLAIMS`` times
    (a worker kept dying on it) is marked ``failed`` instead of being claimed again.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so concurrent workers never claim the same sample.
    SQLite takes no row locks: one process owns an embedded database. The claim's
    ``lease_until`` is its token: the write-back only touches rows still holding it. A queued
    sample with a lease (held back by the grading budget) waits until that lease has passed.
    ``now``: the current UTC time (default: the clock).
    """
    now = now or utcnow()
    stmt = (
        select(Sample)
        .where(
            or_(
                (col(Sample.status) == "queued")
                & (col(Sample.lease_until).is_(None) | (col(Sample.lease_until) <= now)),
                (col(Sample.status) == "claimed") & (col(Sample.lease_until) < now),
            )
        )
        .order_by(col(Sample.created_at))
        .limit(limit)
    )
    if skip_classes:
        stmt = stmt.where(col(Sample.task_class).not_in(list(skip_classes)))
    if only_classes is not None:
        stmt = stmt.where(col(Sample.task_class).in_(list(only_classes)))
    rows = list((await session.exec(skip_locked(session, stmt))).all())
    lease = now + timedelta(seconds=lease_s)
    claimed = []
    for row in rows:
        if row.attempts >= MAX_CLAIMS:
            log.error("sample %s failed: %d attempts ran out", row.decision_id, row.attempts)
            row.status, row.lease_until = "failed", None
            continue
        row.status, row.lease_until, row.attempts = "claimed", lease, row.attempts + 1
        claimed.append(row)
    await session.commit()
    return claimed
