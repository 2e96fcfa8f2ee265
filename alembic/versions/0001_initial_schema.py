"""initial schema

Revision ID: 0001
Revises:

"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "decision",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("task_type", sa.String(length=200), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("table_version", sa.Integer(), nullable=False),
        sa.Column("sampled", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("has_tool_calls", sa.Boolean(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decision_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_decision_task_class"), ["task_class"], unique=False)

    op.create_table(
        "escalation_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("from_model", sa.String(length=128), nullable=False),
        sa.Column("to_model", sa.String(length=128), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=False),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("ci_low", sa.Float(), nullable=True),
        sa.Column("ci_high", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("table_version", sa.Integer(), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_class", "window_start", "to_status", name="uq_escalation_window"),
    )
    with op.batch_alter_table("escalation_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_escalation_event_task_class"), ["task_class"], unique=False
        )

    op.create_table(
        "model",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("input_usd_per_mtok", sa.Float(), nullable=False),
        sa.Column("cached_input_usd_per_mtok", sa.Float(), nullable=True),
        sa.Column("cache_write_usd_per_mtok", sa.Float(), nullable=True),
        sa.Column("output_usd_per_mtok", sa.Float(), nullable=False),
        sa.Column("batch_discount", sa.Float(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("batch_discount >= 0 AND batch_discount < 1", name="ck_model_batch"),
        sa.CheckConstraint("input_usd_per_mtok >= 0", name="ck_model_input_price"),
        sa.CheckConstraint("output_usd_per_mtok >= 0", name="ck_model_output_price"),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("table_version", sa.Integer(), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "routing_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "outcome",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("served_model", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_input_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_write_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("usage_raw", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.id"],
        ),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    with op.batch_alter_table("outcome", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outcome_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outcome_task_class"), ["task_class"], unique=False)

    op.create_table(
        "routing_entry",
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('baseline', 'escalated', 'probation', 'pinned')", name="ck_entry_status"
        ),
        sa.ForeignKeyConstraint(
            ["model"],
            ["model.name"],
        ),
        sa.PrimaryKeyConstraint("task_class"),
    )
    op.create_table(
        "sample",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("input_messages", sa.JSON(), nullable=False),
        sa.Column("output_text", sa.Text(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.id"],
        ),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    with op.batch_alter_table("sample", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sample_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_sample_task_class"), ["task_class"], unique=False)

    op.create_table(
        "grade",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("reference_model", sa.String(length=128), nullable=False),
        sa.Column("grader", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("parse_status", sa.String(length=32), nullable=False),
        sa.Column("raw_output", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "verdict IN ('agree', 'disagree', 'invalid', 'refused')", name="ck_grade_verdict"
        ),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["sample.decision_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("decision_id"),
    )
    with op.batch_alter_table("grade", schema=None) as batch_op:
        batch_op.create_index(
            "ix_grade_class_model_decided", ["task_class", "model", "decided_at"], unique=False
        )

    # The routing table version lives in one row, created here so every bump is an UPDATE.
    routing_state = sa.table(
        "routing_state",
        sa.column("id", sa.Integer),
        sa.column("version", sa.Integer),
        sa.column("updated_at", UTCDateTime()),
    )
    op.bulk_insert(routing_state, [{"id": 1, "version": 0, "updated_at": datetime.now(UTC)}])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("grade", schema=None) as batch_op:
        batch_op.drop_index("ix_grade_class_model_decided")

    op.drop_table("grade")
    with op.batch_alter_table("sample", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sample_task_class"))
        batch_op.drop_index(batch_op.f("ix_sample_status"))

    op.drop_table("sample")
    op.drop_table("routing_entry")
    with op.batch_alter_table("outcome", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outcome_task_class"))
        batch_op.drop_index(batch_op.f("ix_outcome_created_at"))

    op.drop_table("outcome")
    op.drop_table("routing_state")
    op.drop_table("policy")
    op.drop_table("model")
    with op.batch_alter_table("escalation_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_escalation_event_task_class"))

    op.drop_table("escalation_event")
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decision_task_class"))
        batch_op.drop_index(batch_op.f("ix_decision_created_at"))

    op.drop_table("decision")
