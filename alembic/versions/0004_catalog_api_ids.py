"""catalog api ids: the provider's model id and the dated names it reports back

Revision ID: 0004
Revises: 0003

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """``model.api_model`` (NULL = the catalog name) and ``model.aliases`` (JSON list, ``[]``)."""
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_model", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("aliases", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    """Drop both columns."""
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.drop_column("aliases")
        batch_op.drop_column("api_model")
