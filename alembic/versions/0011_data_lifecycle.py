"""data lifecycle: decisions and outcomes partitioned by UTC day on PostgreSQL, the outcome's
decision time, and the sample text's deletion time

Both backends: ``outcome.decided_at`` (the decision's ``created_at``, filled from ``decision``),
``sample.text_deleted_at`` (NULL: the text is kept) and the partial index ``ix_sample_text_kept``
(task_class, created_at) over the samples still holding text, for the text retention job;
``rule_state.counts`` (the escalation rule's settled verdict counts, so a run reads only the
grades written since) with the index ``ix_grade_class_model_created``.

PostgreSQL only: ``decision`` becomes a table partitioned by range of ``created_at`` and
``outcome`` one partitioned by range of ``decided_at`` (declarative partitioning), one partition
per UTC day (``decision_pYYYYMMDD``, ``outcome_pYYYYMMDD``) for every day holding rows and the
next 7 days, plus a ``*_default`` partition so an insert never fails. Their primary keys become
(id, created_at) and (decision_id, decided_at), since a partitioned table's unique constraints
must include the partition key. The foreign keys ``outcome.decision_id`` and
``sample.decision_id`` -> ``decision.id`` are dropped there: a key referencing a partitioned
table must name the partition key, and a whole day's partition could then never be dropped
while its samples (kept with their grades) point at it. The application keeps the link: an
outcome is stored only for a decision that exists (``router.outcomes``), a sample only with its
outcome. The rows are copied into the new tables.

Downgrade: the tables are copied back into plain ones with their old primary keys and foreign
keys (fails when one decision id is stored twice, which only partitioning allows), then the two
columns are dropped.

Revision ID: 0011
Revises: 0010

"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AHEAD_DAYS = 7
# (table, partition key, primary key, the indexes a plain table has)
PARTITIONED = (
    ("decision", "created_at", ("id", "created_at"), ("task_class", "created_at")),
    ("outcome", "decided_at", ("decision_id", "decided_at"), ("task_class", "created_at")),
)
# (referencing table, its foreign key's name)
FOREIGN_KEYS = (("outcome", "outcome_decision_id_fkey"), ("sample", "sample_decision_id_fkey"))


def _day_bound(day: date) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()


def _partition_days(table: str, key: str) -> list[date]:
    """Every UTC day holding rows of ``table`` and the next ``AHEAD_DAYS`` days from today."""
    bind = op.get_bind()
    stored = bind.execute(
        sa.text(f"SELECT DISTINCT (({key}) AT TIME ZONE 'UTC')::date FROM {table}")
    ).scalars()
    today = datetime.now(UTC).date()
    ahead = {today + timedelta(days=i) for i in range(AHEAD_DAYS + 1)}
    return sorted(set(stored) | ahead)


def _partition(
    table: str, source: str, key: str, pk: tuple[str, ...], idx: tuple[str, ...]
) -> None:
    """Rebuild plain ``table`` as one partitioned by day on ``key``, copying its rows."""
    days = _partition_days(table, key)
    op.execute(f"ALTER TABLE {table} RENAME TO {source}")
    op.execute(f"ALTER TABLE {source} RENAME CONSTRAINT {table}_pkey TO {source}_pkey")
    for column in idx:
        op.execute(f"DROP INDEX IF EXISTS ix_{table}_{column}")
    op.execute(
        f"CREATE TABLE {table} (LIKE {source} INCLUDING DEFAULTS) PARTITION BY RANGE ({key})"
    )
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({', '.join(pk)})")
    for column in idx:
        op.execute(f"CREATE INDEX ix_{table}_{column} ON {table} ({column})")
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    for day in days:
        op.execute(
            f"CREATE TABLE {table}_p{day:%Y%m%d} PARTITION OF {table} FOR VALUES FROM "
            f"('{_day_bound(day)}') TO ('{_day_bound(day + timedelta(days=1))}')"
        )
    op.execute(f"INSERT INTO {table} SELECT * FROM {source}")
    op.execute(f"DROP TABLE {source}")


def _unpartition(table: str, pk: str, idx: tuple[str, ...]) -> None:
    """Copy partitioned ``table`` back into a plain table with primary key ``pk``."""
    flat = f"{table}_flat"
    op.execute(f"CREATE TABLE {flat} (LIKE {table} INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {flat} SELECT * FROM {table}")
    op.execute(f"DROP TABLE {table}")  # and every partition with it
    op.execute(f"ALTER TABLE {flat} RENAME TO {table}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({pk})")
    for column in idx:
        op.execute(f"CREATE INDEX ix_{table}_{column} ON {table} ({column})")


def upgrade() -> None:
    """Add ``outcome.decided_at`` and ``sample.text_deleted_at``; partition on PostgreSQL."""
    op.add_column("outcome", sa.Column("decided_at", UTCDateTime(), nullable=True))
    op.execute(
        "UPDATE outcome SET decided_at = (SELECT decision.created_at FROM decision "
        "WHERE decision.id = outcome.decision_id)"
    )
    op.execute("UPDATE outcome SET decided_at = created_at WHERE decided_at IS NULL")
    with op.batch_alter_table("outcome") as batch_op:
        batch_op.alter_column("decided_at", existing_type=UTCDateTime(), nullable=False)
    op.add_column("sample", sa.Column("text_deleted_at", UTCDateTime(), nullable=True))
    op.create_index(
        "ix_sample_text_kept",
        "sample",
        ["task_class", "created_at"],
        sqlite_where=sa.text("text_deleted_at IS NULL"),
        postgresql_where=sa.text("text_deleted_at IS NULL"),
    )
    op.create_index("ix_grade_class_model_created", "grade", ["task_class", "model", "created_at"])
    op.add_column("rule_state", sa.Column("counts", sa.JSON(), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name in FOREIGN_KEYS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
    for table, key, pk, idx in PARTITIONED:
        _partition(table, f"{table}_unpartitioned", key, pk, idx)


def downgrade() -> None:
    """Plain ``decision`` and ``outcome`` again (PostgreSQL); drop the two columns."""
    if op.get_bind().dialect.name == "postgresql":
        _unpartition("decision", "id", PARTITIONED[0][3])
        _unpartition("outcome", "decision_id", PARTITIONED[1][3])
        for table, name in FOREIGN_KEYS:
            op.create_foreign_key(name, table, "decision", ["decision_id"], ["id"])
    with op.batch_alter_table("rule_state") as batch_op:
        batch_op.drop_column("counts")
    op.drop_index("ix_grade_class_model_created", table_name="grade")
    op.drop_index("ix_sample_text_kept", table_name="sample")
    with op.batch_alter_table("sample") as batch_op:
        batch_op.drop_column("text_deleted_at")
    with op.batch_alter_table("outcome") as batch_op:
        batch_op.drop_column("decided_at")
