"""prompt compression: the books per day, the quality guard's probes, state and events

Revision ID: 0012
Revises: 0011

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``compression_day``, ``compression_probe``, ``compression_state`` and
    ``compression_event``."""
    op.create_table(
        "compression_day",
        sa.Column("day", UTCDateTime(), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("compressed", sa.Integer(), nullable=False),
        sa.Column("guarded", sa.Integer(), nullable=False),
        sa.Column("tokens_before", sa.BigInteger(), nullable=False),
        sa.Column("tokens_after", sa.BigInteger(), nullable=False),
        sa.Column("saved_nusd", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "task_class", "model"),
    )
    op.create_table(
        "compression_probe",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("ratio", sa.Float(), nullable=False),
        sa.Column("pipeline", sa.JSON(), nullable=False),
        sa.Column("guard", sa.Boolean(), nullable=False),
        sa.Column("trial", sa.Boolean(), nullable=False),
        sa.Column("input_messages", sa.JSON(), nullable=False),
        sa.Column("output_text", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("parse_status", sa.String(length=32), nullable=True),
        sa.Column("raw_output", sa.Text(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("grade_input_tokens", sa.Integer(), nullable=False),
        sa.Column("grade_output_tokens", sa.Integer(), nullable=False),
        sa.Column("grade_cost_nusd", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("graded_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    op.create_index("ix_compression_probe_task_class", "compression_probe", ["task_class"])
    op.create_index("ix_compression_probe_status", "compression_probe", ["status"])
    op.create_table(
        "compression_state",
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("rule_state", sa.JSON(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_class"),
    )
    op.create_table(
        "compression_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("from_level", sa.Integer(), nullable=False),
        sa.Column("to_level", sa.Integer(), nullable=False),
        sa.Column("from_ratio", sa.Float(), nullable=True),
        sa.Column("to_ratio", sa.Float(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("ci_low", sa.Float(), nullable=True),
        sa.Column("ci_high", sa.Float(), nullable=True),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_compression_event_task_class", "compression_event", ["task_class"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_index("ix_compression_event_task_class", table_name="compression_event")
    op.drop_table("compression_event")
    op.drop_table("compression_state")
    op.drop_index("ix_compression_probe_status", table_name="compression_probe")
    op.drop_index("ix_compression_probe_task_class", table_name="compression_probe")
    op.drop_table("compression_probe")
    op.drop_table("compression_day")
