"""batch lane: callers' files and batches, their routed items, and the provider batches
submitted for them

Revision ID: 0014
Revises: 0013

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``lane_file``, ``lane_batch``, ``lane_upstream`` and ``lane_item``."""
    op.create_table(
        "lane_file",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=256), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("caller", sa.String(length=32), nullable=True),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_lane_file_caller", "lane_file", ["caller"])
    op.create_table(
        "lane_batch",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("caller", sa.String(length=32), nullable=True),
        sa.Column("input_file_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("completion_window", sa.String(length=16), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("output_file_id", sa.String(length=64), nullable=True),
        sa.Column("error_file_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("cancelling_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("webhook_url", sa.String(length=2048), nullable=True),
        sa.Column("webhook_state", sa.String(length=16), nullable=True),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_lane_batch_caller", "lane_batch", ["caller"])
    op.create_index("ix_lane_batch_webhook_state", "lane_batch", ["webhook_state"])
    op.create_index("ix_lane_batch_status", "lane_batch", ["status"])
    op.create_index("ix_lane_batch_created_at", "lane_batch", ["created_at"])
    op.create_table(
        "lane_upstream",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("provider_batch_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_status", sa.String(length=32), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_lane_upstream_status", "lane_upstream", ["status"])
    op.create_table(
        "lane_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("upstream_id", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("realtime_cost_nusd", sa.BigInteger(), nullable=True),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["lane_batch.id"]),
        sa.ForeignKeyConstraint(["upstream_id"], ["lane_upstream.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "custom_id", name="uq_lane_item_custom_id"),
        sa.UniqueConstraint("decision_id"),
    )
    op.create_index("ix_lane_item_batch_id", "lane_item", ["batch_id"])
    op.create_index("ix_lane_item_upstream_id", "lane_item", ["upstream_id"])
    op.create_index("ix_lane_item_status_model", "lane_item", ["status", "model"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    for index, table in (
        ("ix_lane_item_status_model", "lane_item"),
        ("ix_lane_item_upstream_id", "lane_item"),
        ("ix_lane_item_batch_id", "lane_item"),
    ):
        op.drop_index(index, table_name=table)
    op.drop_table("lane_item")
    op.drop_index("ix_lane_upstream_status", table_name="lane_upstream")
    op.drop_table("lane_upstream")
    for index in (
        "ix_lane_batch_webhook_state",
        "ix_lane_batch_created_at",
        "ix_lane_batch_status",
        "ix_lane_batch_caller",
    ):
        op.drop_index(index, table_name="lane_batch")
    op.drop_table("lane_batch")
    op.drop_index("ix_lane_file_caller", table_name="lane_file")
    op.drop_table("lane_file")
