"""What the command modules share: the consoles, settings from the command line, the one-line
error exit, the ``--database-url`` option, a session on the configured database, and how a
command line names a policy file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import make_engine, session_factory
from router.errors import InvalidInput, PolicyError, TierwiseError
from router.policy import builtin_policy_names, builtin_policy_path
from tierwise import migrate
from tierwise.cli.render import error_line
from tierwise.settings import Settings, warn_unknown_names


def _console(width_off_terminal: int) -> Console:
    """A console as wide as the terminal, or ``width_off_terminal`` columns when stdout is not
    a terminal (a pipe, a file, a test's capture), so that wide tables are not wrapped at 80."""
    return Console(width=None if Console().is_terminal else width_off_terminal)


console = _console(160)
"""Where every command prints, errors included."""
wide_console = _console(240)
"""Where ``tierwise eval`` prints: its calibration tables have up to eleven columns."""

DbOption = Annotated[
    str | None, typer.Option("--database-url", help="Overrides TIERWISE_DATABASE_URL.")
]


def load_settings(database_url: str | None, **overrides: object) -> Settings:
    """:class:`Settings` from the environment, with ``overrides`` (field name -> value) and a
    ``--database-url`` given on the command line applied on top.

    Unknown ``TIERWISE_*`` names in the environment or ``.env`` are warned about first, one
    line each with the closest known name (:func:`tierwise.settings.warn_unknown_names`).

    Raises:
        InvalidInput: the environment holds an invalid setting (one line naming it), or the
            database URL is not one tierwise can use (saying what to change).
    """
    warn_unknown_names()
    given: dict[str, Any] = {"database_url": database_url} if database_url else {}
    try:
        settings = Settings(**given)  # the validators check the database URL
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "TIERWISE_" + "_".join(str(p) for p in first["loc"]).upper()
        raise InvalidInput(f"{name}: {first['msg']}", field=name) from None
    return settings.model_copy(update=dict(overrides))


def print_error(exc: TierwiseError) -> None:
    """Print ``exc`` as one line, ``error (<code>): <message>``, never wrapped."""
    console.print(error_line(exc), soft_wrap=True)


def fail(exc: TierwiseError) -> NoReturn:
    """End the command on a deliberate error: print it as one line, exit code 2.

    Raises:
        typer.Exit: always, with code 2.
    """
    print_error(exc)
    raise typer.Exit(2)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion in a new event loop; a TierwiseError it raises ends the
    command through :func:`fail`.

    Raises:
        typer.Exit: code 2, when ``main`` raises a TierwiseError.
    """
    try:
        asyncio.run(main)
    except TierwiseError as exc:
        fail(exc)


@asynccontextmanager
async def open_session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on an engine of its own for ``database_url``; the engine is disposed when the
    block ends. The caller commits.

    Raises:
        InvalidInput: the database cannot be reached, or its schema is not at the newest
            revision (``tierwise db upgrade`` first), before any statement runs.
    """
    await migrate.require_head(database_url)
    engine = make_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            yield session
    finally:
        await engine.dispose()


def resolve_policy(file_or_name: Path) -> Path:
    """The policy file a command line names: ``file_or_name`` itself when it exists or reads as a
    path (a folder or a suffix in it), else the built-in policy of that name, so an installed
    tierwise applies its own policies without a path into site-packages.

    Raises:
        PolicyError: a bare name that is neither a file here nor a built-in policy.
    """
    if file_or_name.exists() or len(file_or_name.parts) != 1 or file_or_name.suffix:
        return file_or_name
    if file_or_name.name in builtin_policy_names():
        return builtin_policy_path(file_or_name.name)
    raise PolicyError(
        f"cannot read policy file {file_or_name}: no such file, nor a built-in policy of that "
        f"name ({', '.join(builtin_policy_names())})"
    )
