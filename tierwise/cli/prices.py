"""``tierwise prices [MODEL] [--json]``: the price history of the catalog (``price`` rows)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from router.models import Price
from router.money import price_usd
from router.table import price_rows
from tierwise.cli._common import DbOption, console, load_settings, open_session, run

PRICE_FIELDS = ("input", "cached_input", "cache_write", "output", "embedding_input")


def price_dict(row: Price) -> dict[str, Any]:
    """One price row as JSON: ``model``, ``effective_from`` (UTC ISO), each price in USD per 1M
    tokens as a decimal string (exact; null = the input price, or none for embedding input) and
    ``batch_discount`` (a number)."""
    out: dict[str, Any] = {"model": row.model, "effective_from": row.effective_from.isoformat()}
    for name in PRICE_FIELDS:
        value = price_usd(getattr(row, f"{name}_nusd_per_mtok"))
        out[f"{name}_usd_per_mtok"] = None if value is None else str(value)
    out["batch_discount"] = row.batch_discount
    return out


def render_prices(rows: list[dict[str, Any]]) -> Table:
    """The history as a table, one line per price row (USD per 1M tokens; ``-`` = none)."""
    table = Table(title="prices (USD per 1M tokens)")
    for head in ("model", "effective from (UTC)", *PRICE_FIELDS, "batch discount"):
        table.add_column(head.replace("_", " "))
    for r in rows:
        table.add_row(
            r["model"],
            r["effective_from"],
            *(r[f"{n}_usd_per_mtok"] or "-" for n in PRICE_FIELDS),
            str(r["batch_discount"]),
        )
    return table


def prices(
    model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DbOption = None,
) -> None:
    """Every price row, by model and date: each applies from its date to the model's next row."""
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            rows = [price_dict(r) for r in await price_rows(session, model)]
        if as_json:
            typer.echo(json.dumps(rows))
        else:
            console.print(render_prices(rows))

    run(main())
