"""job state apart from caller data: held-out item ids and the retry's spend in their own columns

The route's ``metadata`` is the caller's; the grading job used to keep its retry bookkeeping in
the sample's copy of it and read the held-out item id from it, so a caller could inflate the
books or suppress the retry. Existing rows are carried over: ``item_id`` from
``meta.item_id``; an earlier attempt the job recorded as ``meta.first_attempt`` (its exact
shape, on a sample it requeued) into ``earlier_*`` (and removed from ``meta``). The downgrade
puts both back. Row by row: fine for the small databases this history has seen; a large one
would want one set-based UPDATE per dialect.

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


# The two tables as this revision sees them (lightweight: no metadata, no constraints).
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
    sa.column("status", sa.String),
    sa.column("attempts", sa.Integer),
    sa.column("item_id", sa.String),
    sa.column("earlier_verdict", sa.String),
    sa.column("earlier_input_tokens", sa.Integer),
    sa.column("earlier_output_tokens", sa.Integer),
    sa.column("earlier_cost_usd", sa.Float),
)


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
    for row in bind.execute(sa.select(decision.c.id, decision.c.meta)).all():
        item = _item_id(row.meta)
        if item is not None:
            bind.execute(decision.update().where(decision.c.id == row.id).values(item_id=item))
    rows = bind.execute(
        sa.select(sample.c.decision_id, sample.c.meta, sample.c.status, sample.c.attempts)
    ).all()
    for row in rows:
        meta = row.meta if isinstance(row.meta, dict) else None
        if meta is None:
            continue
        values: dict[str, Any] = {"item_id": _item_id(meta)}
        earlier = _job_first_attempt(meta.get("first_attempt"), row.status, row.attempts)
        if earlier is not None:
            values.update(earlier)
            values["meta"] = {k: v for k, v in meta.items() if k != "first_attempt"} or None
        bind.execute(
            sample.update().where(sample.c.decision_id == row.decision_id).values(**values)
        )


def _job_first_attempt(first: Any, status: str, attempts: int) -> dict[str, Any] | None:
    """The ``earlier_*`` values of a first attempt the grading job recorded, or None.

    Only the job's exact shape counts, and only on a sample the job requeued (queued or claimed,
    claimed at least once): any other ``first_attempt`` came in the caller's metadata and stays
    the caller's (it is no evidence of spend)."""
    if not isinstance(first, dict) or status not in ("queued", "claimed") or attempts < 1:
        return None
    verdict, tokens_in, tokens_out = (
        first.get("verdict"),
        first.get("input_tokens"),
        first.get("output_tokens"),
    )
    cost = first.get("cost_usd")
    if (
        verdict not in ("invalid", "refused")
        or not isinstance(tokens_in, int)
        or not isinstance(tokens_out, int)
        or isinstance(tokens_in, bool)
        or isinstance(tokens_out, bool)
        or tokens_in < 0
        or tokens_out < 0
        or not (cost is None or (isinstance(cost, int | float) and not isinstance(cost, bool)))
    ):
        return None
    return {
        "earlier_verdict": verdict,
        "earlier_input_tokens": tokens_in,
        "earlier_output_tokens": tokens_out,
        "earlier_cost_usd": None if cost is None else float(cost),
    }


def downgrade() -> None:
    """Put the job's state and the held-out item ids back where the old code reads them
    (``sample.meta.first_attempt``, ``meta.item_id``), then drop the columns."""
    bind = op.get_bind()
    for row in bind.execute(
        sa.select(decision.c.id, decision.c.meta, decision.c.item_id).where(
            decision.c.item_id.is_not(None)
        )
    ).all():
        meta = {**(row.meta if isinstance(row.meta, dict) else {}), "item_id": row.item_id}
        bind.execute(decision.update().where(decision.c.id == row.id).values(meta=meta))
    for row in bind.execute(
        sa.select(sample).where(
            sample.c.item_id.is_not(None) | sample.c.earlier_verdict.is_not(None)
        )
    ).all():
        meta = dict(row.meta) if isinstance(row.meta, dict) else {}
        if row.item_id is not None:
            meta["item_id"] = row.item_id
        if row.earlier_verdict is not None:
            meta["first_attempt"] = {
                "verdict": row.earlier_verdict,
                "parse_status": row.earlier_verdict,
                "input_tokens": row.earlier_input_tokens,
                "output_tokens": row.earlier_output_tokens,
                "cost_usd": row.earlier_cost_usd,
            }
        bind.execute(
            sample.update().where(sample.c.decision_id == row.decision_id).values(meta=meta)
        )
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
