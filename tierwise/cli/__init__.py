"""The ``tierwise`` command line (typer). Composition only: every command wires settings, the
database and the planes, then calls into ``router`` / ``evaluator`` and prints what
:mod:`tierwise.cli.render` makes of the result.

One module per command group (``db``, ``policy``, ``classes``, ``evaluate``, ``keys``) and per
family of top-level commands (``serve``: routing-table, serve, worker; ``replay``: replay,
report). This module assembles them into :data:`app`, in the order ``tierwise --help`` lists
them."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from router.errors import TierwiseError
from tierwise.cli import (
    cache,
    classes,
    costs,
    dataset,
    db,
    evaluate,
    keys,
    policy,
    prices,
    replay,
    serve,
)
from tierwise.cli._common import print_error


class _OneLineErrors(TyperGroup):
    """The top command group: a TierwiseError raised by any command (a bad database URL, a
    database that cannot be reached, a bad policy) ends it as one line and exit code 2, also
    when the app is invoked in-process (typer's CliRunner), not only through :func:`main`."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors its own)
        try:
            return super().invoke(ctx)
        except TierwiseError as exc:
            print_error(exc)
            raise typer.Exit(2) from None


app = typer.Typer(
    help="tierwise: adaptive LLM routing with sampled grading.",
    no_args_is_help=True,
    cls=_OneLineErrors,
)
app.command("routing-table")(serve.routing_table)
app.command()(serve.serve)
app.command()(serve.worker)
app.command()(replay.replay)
app.command()(replay.report)
app.command()(prices.prices)
app.add_typer(policy.app, name="policy")
app.add_typer(db.app, name="db")
app.add_typer(evaluate.app, name="eval")
app.add_typer(classes.app, name="class")
app.add_typer(keys.app, name="keys")
app.add_typer(costs.app, name="costs")
app.add_typer(dataset.app, name="dataset")
app.add_typer(cache.app, name="cache")


def main() -> None:
    """Console entry point: a TierwiseError anywhere is one line and exit code 2, not a
    traceback.

    Raises:
        SystemExit: when the command ends (click's exit code), 2 on a TierwiseError.
    """
    try:
        app()
    except TierwiseError as exc:
        print_error(exc)
        raise SystemExit(2) from None
