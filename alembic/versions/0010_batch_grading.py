"""batch grading: provider batches of grading calls, their items, and one cost row per
(provider batch id, custom id)

Revision ID: 0010
Revises: 0009

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``grading_batch``, ``grading_batch_item`` and ``grading_cost``."""
    op.create_table(
        "grading_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("provider_batch_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_status", sa.String(length=32), nullable=False),
        sa.Column("submitted_at", UTCDateTime(), nullable=False),
        sa.Column("deadline", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("errored", sa.Integer(), nullable=False),
        sa.Column("expired", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "provider_batch_id", name="uq_grading_batch_provider_id"),
    )
    op.create_index("ix_grading_batch_status", "grading_batch", ["status"])
    op.create_table(
        "grading_batch_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("custom_id", sa.String(length=64), nullable=False),
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["grading_batch.id"]),
        sa.ForeignKeyConstraint(["decision_id"], ["sample.decision_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "custom_id", name="uq_grading_batch_item_custom_id"),
    )
    op.create_index("ix_grading_batch_item_batch_id", "grading_batch_item", ["batch_id"])
    op.create_index("ix_grading_batch_item_decision_id", "grading_batch_item", ["decision_id"])
    op.create_table(
        "grading_cost",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_batch_id", sa.String(length=128), nullable=False),
        sa.Column("custom_id", sa.String(length=64), nullable=False),
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_nusd", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["decision_id"], ["sample.decision_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "provider_batch_id", "custom_id", name="uq_grading_cost_batch_custom_id"
        ),
    )
    op.create_index("ix_grading_cost_decision_id", "grading_cost", ["decision_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_index("ix_grading_cost_decision_id", table_name="grading_cost")
    op.drop_table("grading_cost")
    op.drop_index("ix_grading_batch_item_decision_id", table_name="grading_batch_item")
    op.drop_index("ix_grading_batch_item_batch_id", table_name="grading_batch_item")
    op.drop_table("grading_batch_item")
    op.drop_index("ix_grading_batch_status", table_name="grading_batch")
    op.drop_table("grading_batch")
