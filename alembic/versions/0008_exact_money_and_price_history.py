"""exact money and price history: costs in whole nano-USD, prices in a dated ``price`` table

Upgrade: every model's float prices become one ``price`` row (whole nano-USD per 1M tokens,
effective from 1970-01-01 so it covers every outcome already recorded) and leave ``model``; the
float USD costs ``outcome.cost_usd``, ``grade.cost_usd`` and ``sample.earlier_cost_usd`` become
BigInteger nano-USD ``*_cost_nusd``. A float is read as its shortest decimal text and rounded half
to even (0.0013 -> 1,300,000); NULL (unpriced) stays NULL.

Downgrade: the costs go back to float USD (nano-USD / 1e9) and each model gets the prices of its
latest ``price`` row (the history is lost).

Revision ID: 0008
Revises: 0007

"""

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import sqlalchemy as sa
from alembic import op

from router.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NANO = 1_000_000_000
PRICES = (
    "input",
    "cached_input",
    "cache_write",
    "output",
)
# (table, primary key, float USD column, nano-USD column)
COSTS = (
    ("outcome", "decision_id", "cost_usd", "cost_nusd"),
    ("grade", "id", "cost_usd", "cost_nusd"),
    ("sample", "decision_id", "earlier_cost_usd", "earlier_cost_nusd"),
)


def _nusd(value: float | None) -> int | None:
    """Float USD -> whole nano-USD, half to even, read as the float's shortest decimal text."""
    if value is None:
        return None
    return round(Fraction(Decimal(repr(float(value)))) * NANO)


def _usd(value: int | None) -> float | None:
    return None if value is None else float(Decimal(int(value)) / NANO)


def _convert(table: str, key: str, source: str, target: str, fn: Any) -> None:
    bind = op.get_bind()
    t = sa.table(table, sa.column(key), sa.column(source), sa.column(target))
    rows = bind.execute(sa.select(t.c[key], t.c[source]).where(t.c[source].is_not(None))).all()
    for row in rows:
        bind.execute(t.update().where(t.c[key] == row[0]).values({target: fn(row[1])}))


def upgrade() -> None:
    """Create ``price`` from the catalog's prices; costs become BigInteger nano-USD."""
    op.create_table(
        "price",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("effective_from", UTCDateTime(), nullable=False),
        sa.Column("input_nusd_per_mtok", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_nusd_per_mtok", sa.BigInteger(), nullable=True),
        sa.Column("cache_write_nusd_per_mtok", sa.BigInteger(), nullable=True),
        sa.Column("output_nusd_per_mtok", sa.BigInteger(), nullable=False),
        sa.Column("embedding_input_nusd_per_mtok", sa.BigInteger(), nullable=True),
        sa.Column("batch_discount", sa.Float(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("input_nusd_per_mtok >= 0", name="ck_price_input"),
        sa.CheckConstraint("output_nusd_per_mtok >= 0", name="ck_price_output"),
        sa.CheckConstraint("batch_discount >= 0 AND batch_discount < 1", name="ck_price_batch"),
        sa.ForeignKeyConstraint(["model"], ["model.name"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "effective_from", name="uq_price_model_from"),
    )
    bind = op.get_bind()
    model = sa.table(
        "model",
        sa.column("name"),
        sa.column("updated_at", UTCDateTime()),
        sa.column("batch_discount"),
        *(sa.column(f"{p}_usd_per_mtok") for p in PRICES),
    )
    price = sa.table(
        "price",
        sa.column("model"),
        sa.column("effective_from", UTCDateTime()),
        sa.column("batch_discount"),
        sa.column("created_at", UTCDateTime()),
        *(sa.column(f"{p}_nusd_per_mtok") for p in PRICES),
    )
    for row in bind.execute(sa.select(model).order_by(model.c.name)).mappings().all():
        values = {f"{p}_nusd_per_mtok": _nusd(row[f"{p}_usd_per_mtok"]) for p in PRICES}
        bind.execute(
            price.insert().values(
                model=row["name"],
                effective_from=EPOCH,
                batch_discount=row["batch_discount"],
                created_at=row["updated_at"],
                **values,
            )
        )
    with op.batch_alter_table("model", schema=None) as batch_op:
        for name in ("ck_model_batch", "ck_model_input_price", "ck_model_output_price"):
            batch_op.drop_constraint(name, type_="check")
        for p in PRICES:
            batch_op.drop_column(f"{p}_usd_per_mtok")
        batch_op.drop_column("batch_discount")
    for table, key, source, target in COSTS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column(target, sa.BigInteger(), nullable=True))
        _convert(table, key, source, target, _nusd)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column(source)


def downgrade() -> None:
    """Costs back to float USD; each model gets its latest price row's prices; drop ``price``."""
    for table, key, source, target in COSTS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column(source, sa.Float(), nullable=True))
        _convert(table, key, target, source, _usd)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column(target)
    with op.batch_alter_table("model", schema=None) as batch_op:
        for p in PRICES:
            batch_op.add_column(sa.Column(f"{p}_usd_per_mtok", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("batch_discount", sa.Float(), nullable=True))
    bind = op.get_bind()
    price = sa.table(
        "price",
        sa.column("id"),
        sa.column("model"),
        sa.column("effective_from", UTCDateTime()),
        sa.column("batch_discount"),
        *(sa.column(f"{p}_nusd_per_mtok") for p in PRICES),
    )
    model = sa.table(
        "model",
        sa.column("name"),
        sa.column("batch_discount"),
        *(sa.column(f"{p}_usd_per_mtok") for p in PRICES),
    )
    latest: dict[str, Any] = {}
    rows = bind.execute(sa.select(price).order_by(price.c.model, price.c.effective_from))
    for row in rows.mappings().all():
        latest[row["model"]] = row
    for name, row in latest.items():
        values = {f"{p}_usd_per_mtok": _usd(row[f"{p}_nusd_per_mtok"]) for p in PRICES}
        bind.execute(
            model.update()
            .where(model.c.name == name)
            .values(batch_discount=row["batch_discount"], **values)
        )
    # A model that never had a price row (none is made so) is priced free rather than lost.
    bind.execute(
        model.update()
        .where(model.c.input_usd_per_mtok.is_(None))
        .values(input_usd_per_mtok=0.0, output_usd_per_mtok=0.0, batch_discount=0.5)
    )
    with op.batch_alter_table("model", schema=None) as batch_op:
        for name in ("input_usd_per_mtok", "output_usd_per_mtok", "batch_discount"):
            batch_op.alter_column(name, existing_type=sa.Float(), nullable=False)
        batch_op.create_check_constraint(
            "ck_model_batch", "batch_discount >= 0 AND batch_discount < 1"
        )
        batch_op.create_check_constraint("ck_model_input_price", "input_usd_per_mtok >= 0")
        batch_op.create_check_constraint("ck_model_output_price", "output_usd_per_mtok >= 0")
    op.drop_table("price")
