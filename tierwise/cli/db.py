"""``tierwise db``: the database schema."""

from __future__ import annotations

import typer

from tierwise import migrate
from tierwise.cli._common import DbOption, console, load_settings

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(database_url: DbOption = None) -> None:
    """Create or migrate the schema (alembic upgrade head)."""
    settings = load_settings(database_url)
    migrate.upgrade(settings.database_url)
    console.print(f"schema at head on {migrate.make_url_safe(settings.database_url)}")
