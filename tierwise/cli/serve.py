"""The long-running processes, ``tierwise serve`` (the API) and ``tierwise worker`` (the jobs
alone), and ``tierwise routing-table``, the table they serve. Top-level commands: the package
registers these functions on its app."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from router.table import load_snapshot
from tierwise import migrate
from tierwise.app import create_app
from tierwise.cli._common import DbOption, console, load_settings, open_session
from tierwise.cli.render import render_routing_table
from tierwise.logs import configure_logging
from tierwise.planes import run_worker
from tierwise.settings import Settings


def routing_table(database_url: DbOption = None) -> None:
    """Print the routing table."""
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            snap = await load_snapshot(session)
        if snap is None:
            console.print("no policy applied yet: run `tierwise policy apply FILE|default`")
            return
        console.print(render_routing_table(snap))

    asyncio.run(main())


LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format", help="json (one object a line) or console; overrides TIERWISE_LOG_FORMAT."
    ),
]


def _process_settings(database_url: str | None, log_format: str | None) -> Settings:
    """Settings of a long-running process, with its logging configured once
    (:func:`tierwise.logs.configure_logging`: ``settings.log_level``, ``settings.log_format``)
    before its database is migrated to head."""
    overrides: dict[str, object] = {}
    if log_format is not None:
        if log_format not in ("json", "console"):
            raise typer.BadParameter("json or console", param_hint="--log-format")
        overrides["log_format"] = log_format
    settings = load_settings(database_url, **overrides)
    configure_logging(settings.log_level, settings.log_format)
    migrate.upgrade(settings.database_url)
    return settings


def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    access_log: Annotated[
        bool,
        typer.Option(help="Log every HTTP request (every call is recorded in the database)."),
    ] = False,
    database_url: DbOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run the service (data plane and, unless TIERWISE_RUN_SCHEDULER=false, the jobs).
    uvicorn serves it with httptools and uvloop (both dependencies)."""
    import uvicorn

    settings = _process_settings(database_url, log_format)
    if access_log:
        settings = settings.model_copy(update={"access_log": True})
    uvicorn.run(
        create_app(settings, freeze_heap=True),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        # The app's own access line carries the request's ids (tierwise.logs.RequestContext);
        # log_config=None keeps the logging configure_logging set up.
        access_log=False,
        log_config=None,
        http="httptools",
        loop="uvloop",
    )


def worker(database_url: DbOption = None, log_format: LogFormatOption = None) -> None:
    """Run the scheduled jobs (grading, escalation) without serving HTTP, so routers and
    workers scale apart. Stops on SIGINT or SIGTERM."""
    settings = _process_settings(database_url, log_format)
    asyncio.run(run_worker(settings))
