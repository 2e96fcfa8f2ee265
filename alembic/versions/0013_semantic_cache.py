"""semantic cache: entries (pgvector HNSW on PostgreSQL), one lookup row per gateway call, the
quality guard's per-class state and its events

Revision ID: 0013
Revises: 0012

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from router.cache.models import Embedding
from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HNSW_DIMS = (256, 1536)
"""Dimensions with a partial HNSW index: wordllama's 256 (the offline embedder) and
text-embedding-3-small's 1536. Entries of another dimension are searched without an index."""


def upgrade() -> None:
    """Create ``cache_entry``, ``cache_lookup``, ``cache_class_state`` and
    ``cache_guard_event``; on PostgreSQL the ``vector`` extension first and an HNSW index
    (cosine) per dimension in :data:`HNSW_DIMS`."""
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        available = op.get_bind().execute(
            sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        )
        if not available.scalar():
            raise RuntimeError(
                "this PostgreSQL server has no pgvector extension, which the semantic cache's "
                "tables need: install it (postgresql-<major>-pgvector from the PostgreSQL apt "
                "repository, or built from source; README, semantic cache), then migrate again"
            )
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "cache_entry",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("namespace", sa.String(length=200), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("route_version", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("embedder", sa.String(length=128), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("embedding", Embedding(), nullable=False),
        sa.Column("query_text", sa.Text(), nullable=False),
        sa.Column("answer_text", sa.Text(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("min_similarity", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cache_entry_scope", "cache_entry", ["scope"])
    op.create_index("ix_cache_entry_key_hash", "cache_entry", ["key_hash"])
    op.create_index("ix_cache_entry_expires_at", "cache_entry", ["expires_at"])
    op.create_index("ix_cache_entry_class_model", "cache_entry", ["task_class", "model"])
    if postgres:
        for dim in HNSW_DIMS:
            op.execute(
                f"CREATE INDEX ix_cache_entry_hnsw_{dim} ON cache_entry "
                f"USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
            )
    op.create_table(
        "cache_lookup",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("namespace", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("route_version", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("match", sa.String(length=16), nullable=True),
        sa.Column("similarity", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("entry_id", sa.String(length=32), nullable=True),
        sa.Column("sampled", sa.Boolean(), nullable=False),
        sa.Column("saved_nusd", sa.BigInteger(), nullable=True),
        sa.Column("embedding_tokens", sa.Integer(), nullable=False),
        sa.Column("embedding_nusd", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    op.create_index("ix_cache_lookup_task_class", "cache_lookup", ["task_class"])
    op.create_index("ix_cache_lookup_created_at", "cache_lookup", ["created_at"])
    op.create_table(
        "cache_class_state",
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("route_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_class"),
    )
    op.create_table(
        "cache_guard_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_class", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_threshold", sa.Float(), nullable=False),
        sa.Column("to_threshold", sa.Float(), nullable=True),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("lower", sa.Float(), nullable=True),
        sa.Column("upper", sa.Float(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("target", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cache_guard_event_task_class", "cache_guard_event", ["task_class"])
    op.create_index("ix_cache_guard_event_created_at", "cache_guard_event", ["created_at"])


def downgrade() -> None:
    """Drop the cache's tables (the ``vector`` extension stays: other databases' objects may
    use it, and dropping it needs more than this migration owns)."""
    op.drop_table("cache_guard_event")
    op.drop_table("cache_class_state")
    op.drop_table("cache_lookup")
    op.drop_table("cache_entry")
