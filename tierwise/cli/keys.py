"""``tierwise keys``: callers' API keys (create, list, revoke), the functions of
:mod:`router.keys`. A running service sees a change within its poll interval (about a second)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from router.keys import SCOPES, create_key, list_keys, parse_scopes, revoke_key
from tierwise import migrate
from tierwise.cli._common import DbOption, console, load_settings, open_session, run
from tierwise.cli.render import render_keys, render_new_key

app = typer.Typer(help="Callers' API keys.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key (unique).")],
    scopes: Annotated[
        str, typer.Option("--scopes", help=f"Comma-separated, of: {','.join(SCOPES)}.")
    ],
    as_json: JsonOption = False,
    database_url: DbOption = None,
) -> None:
    """Create a key and print it, once: only its hash is stored. Migrates the database first."""
    settings = load_settings(database_url)
    migrate.upgrade(settings.database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            made = await create_key(session, name, parse_scopes(scopes))
            await session.commit()
        if as_json:
            typer.echo(json.dumps({**made.info.to_dict(), "key": made.key}))
            return
        for line in render_new_key(made.info, made.key):
            console.print(line, soft_wrap=True, highlight=False)

    run(main())


@app.command("list")
def keys_list(as_json: JsonOption = False, database_url: DbOption = None) -> None:
    """List every key, live and revoked (id, name, scopes, created, revoked); never a hash."""
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            keys = await list_keys(session)
        if as_json:
            typer.echo(json.dumps([k.to_dict() for k in keys]))
        elif not keys:
            console.print("no API keys: every endpoint is open; `tierwise keys create` makes one")
        else:
            console.print(render_keys(keys))

    run(main())


@app.command("revoke")
def keys_revoke(
    id_or_name: Annotated[str, typer.Argument(help="The key's id or name.")],
    database_url: DbOption = None,
) -> None:
    """Revoke a key: refused by every running service within about a second; its row stays, so
    its decisions stay attributable."""
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            info = await revoke_key(session, id_or_name)
            await session.commit()
        console.print(f"revoked API key {info.id} ({info.name})", soft_wrap=True, highlight=False)

    run(main())
