"""class registry: every task class ever routed, so jobs stop scanning the decisions for it

Revision ID: 0006
Revises: 0005

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``task_class`` and fill it from the decisions already stored."""
    op.create_table(
        "task_class",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("first_routed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute(
        "INSERT INTO task_class (name, first_routed_at) "
        "SELECT task_class, MIN(created_at) FROM decision GROUP BY task_class"
    )


def downgrade() -> None:
    """Drop ``task_class``."""
    op.drop_table("task_class")
