"""The long-running processes, ``tierwise serve`` (the API) and ``tierwise worker`` (the jobs
alone), and ``tierwise routing-table``, the table they serve. Top-level commands: the package
registers these functions on its app."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from router.table import load_snapshot
from tierwise import migrate
from tierwise.app import create_app
from tierwise.cli._common import DbOption, console, load_settings, open_session
from tierwise.cli.render import render_routing_table
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


def _process_settings(database_url: str | None) -> Settings:
    """Settings of a long-running process, after migrating its database to head and setting
    the root logger to ``settings.log_level``."""
    settings = load_settings(database_url)
    migrate.upgrade(settings.database_url)
    logging.basicConfig(level=settings.log_level)
    return settings


def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    access_log: Annotated[
        bool,
        typer.Option(help="Log every HTTP request (every call is recorded in the database)."),
    ] = False,
    database_url: DbOption = None,
) -> None:
    """Run the service (data plane and, unless TIERWISE_RUN_SCHEDULER=false, the jobs).
    uvicorn serves it with httptools and uvloop (both dependencies)."""
    import uvicorn

    settings = _process_settings(database_url)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=access_log,
        http="httptools",
        loop="uvloop",
    )


def worker(database_url: DbOption = None) -> None:
    """Run the scheduled jobs (grading, escalation) without serving HTTP, so routers and
    workers scale apart. Stops on SIGINT or SIGTERM."""
    settings = _process_settings(database_url)
    asyncio.run(run_worker(settings))
