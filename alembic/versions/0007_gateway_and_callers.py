"""gateway and callers: API keys, the caller and shadow flag of a decision, a gateway call's
attempts and time to first token, the model whose answer a shadow-mode sample grades

Revision ID: 0007
Revises: 0006

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``api_key``; add ``decision.caller`` / ``decision.shadow``, ``outcome.attempts`` /
    ``outcome.ttft_ms`` and ``sample.answer_model`` (all NULL or false on existing rows)."""
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_api_key_name"),
    )
    with op.batch_alter_table("decision") as batch:
        batch.add_column(sa.Column("caller", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("outcome") as batch:
        batch.add_column(sa.Column("attempts", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("ttft_ms", sa.Float(), nullable=True))
    with op.batch_alter_table("sample") as batch:
        batch.add_column(sa.Column("answer_model", sa.String(length=128), nullable=True))


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    with op.batch_alter_table("sample") as batch:
        batch.drop_column("answer_model")
    with op.batch_alter_table("outcome") as batch:
        batch.drop_column("ttft_ms")
        batch.drop_column("attempts")
    with op.batch_alter_table("decision") as batch:
        batch.drop_column("shadow")
        batch.drop_column("caller")
    op.drop_table("api_key")
