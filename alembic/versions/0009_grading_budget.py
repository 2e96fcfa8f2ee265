"""grading budget: one row per (scope, UTC day), money in integer nano-USD

Revision ID: 0009
Revises: 0008

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``grading_budget`` (scope ``*`` or a task class, UTC day, limit / reserved / spent
    in nano-USD)."""
    op.create_table(
        "grading_budget",
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("limit_nusd", sa.BigInteger(), nullable=False),
        sa.Column("reserved_nusd", sa.BigInteger(), nullable=False),
        sa.Column("spent_nusd", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "reserved_nusd >= 0 AND spent_nusd >= 0", name="ck_grading_budget_nonneg"
        ),
        sa.PrimaryKeyConstraint("scope", "day"),
    )


def downgrade() -> None:
    """Drop ``grading_budget``."""
    op.drop_table("grading_budget")
