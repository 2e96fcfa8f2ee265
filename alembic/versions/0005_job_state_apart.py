"""job state apart from caller data: held-out item ids and the retry's spend in their own columns

The route's ``metadata`` is the caller's; the grading job used to keep its retry bookkeeping in
the sample's copy of it and read the held-out item id from it, so a caller could inflate the
books or suppress the retry. Existing rows are carried over: ``item_id`` from
``meta.item_id``; an earlier attempt recorded as ``meta.first_attempt`` into ``earlier_*``
(and removed from ``meta``).

Revision ID: 0005
Revises: 0004

"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _item_id(meta: Any) -> str | None:
    value = meta.get("item_id") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 200 else None


def upgrade() -> None:
    """Add ``decision.item_id``, ``sample.item_id`` and ``sample.earlier_*``; carry data over."""
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("item_id", sa.String(length=200), nullable=True))
    with op.batch_alter_table("sample", schema=None) as batch_op:
        batch_op.add_column(sa.Column("item_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("earlier_verdict", sa.String(length=16), nullable=True))
        for name in ("earlier_input_tokens", "earlier_output_tokens"):
            batch_op.add_column(
                sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0"))
            )
        batch_op.add_column(sa.Column("earlier_cost_usd", sa.Float(), nullable=True))

    bind = op.get_bind()
    decision = sa.table(
        "decision",
        sa.column("id", sa.String),
        sa.column("meta", sa.JSON),
        sa.column("item_id", sa.String),
    )
    sample = sa.table(
        "sample",
        sa.column("decision_id", sa.String),
        sa.column("meta", sa.JSON),
        sa.column("item_id", sa.String),
        sa.column("earlier_verdict", sa.String),
        sa.column("earlier_input_tokens", sa.Integer),
        sa.column("earlier_output_tokens", sa.Integer),
        sa.column("earlier_cost_usd", sa.Float),
    )
    for row in bind.execute(sa.select(decision.c.id, decision.c.meta)).all():
        item = _item_id(row.meta)
        if item is not None:
            bind.execute(decision.update().where(decision.c.id == row.id).values(item_id=item))
    for row in bind.execute(sa.select(sample.c.decision_id, sample.c.meta)).all():
        meta = row.meta if isinstance(row.meta, dict) else None
        if meta is None:
            continue
        values: dict[str, Any] = {"item_id": _item_id(meta)}
        first = meta.get("first_attempt")
        if isinstance(first, dict):
            cost = first.get("cost_usd")
            values.update(
                earlier_verdict=str(first.get("verdict", "invalid"))[:16],
                earlier_input_tokens=int(first.get("input_tokens", 0)),
                earlier_output_tokens=int(first.get("output_tokens", 0)),
                earlier_cost_usd=float(cost) if isinstance(cost, int | float) else None,
                meta={k: v for k, v in meta.items() if k != "first_attempt"} or None,
            )
        bind.execute(
            sample.update().where(sample.c.decision_id == row.decision_id).values(**values)
        )


def downgrade() -> None:
    """Drop the columns (held-out item ids stay in ``meta`` where the caller sent them)."""
    with op.batch_alter_table("sample", schema=None) as batch_op:
        for name in (
            "earlier_cost_usd",
            "earlier_output_tokens",
            "earlier_input_tokens",
            "earlier_verdict",
            "item_id",
        ):
            batch_op.drop_column(name)
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.drop_column("item_id")
