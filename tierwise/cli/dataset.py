"""``tierwise dataset export``: sampled outcomes of a time range and set of classes, as a
held-out set (``datasets/README.md``) that ``tierwise eval`` runs candidates on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evaluator.costs import parse_range
from evaluator.evaluation import export_samples
from router.errors import TierwiseError
from tierwise.cli._common import DbOption, console, fail, load_settings, open_session, run

app = typer.Typer(help="Held-out sets from your own traffic.", no_args_is_help=True)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option(help="The JSONL file to write (its manifest beside it).")],
    since: Annotated[
        str | None, typer.Option(help="From (ISO date or datetime, UTC; inclusive).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Until (exclusive; a bare date includes that day).")
    ] = None,
    task_class: Annotated[
        list[str] | None,
        typer.Option("--class", help="A task class to export (repeat; default: every class)."),
    ] = None,
    name: Annotated[str, typer.Option(help="The set's name (the ids' prefix).")] = "traffic",
    database_url: DbOption = None,
) -> None:
    """Write the sampled outcomes (input, output, model, usage, grade and the judge's
    explanation or the reference's answer) decided in a time range as a held-out set."""
    try:
        start, end = parse_range(since, until)
    except TierwiseError as exc:
        fail(exc)
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            n = await export_samples(
                session, out, name=name, since=start, until=end, classes=task_class or ()
            )
        console.print(f"wrote {n} items to {out} (manifest: {out.parent / 'manifest.json'})")

    run(main())
