"""``tierwise policy``: check a routing policy, or load it into the routing table."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from evaluator.calibration import uncalibrated_classes
from router.errors import TierwiseError
from router.policy import Policy, load_policy
from router.table import apply_policy
from tierwise import migrate
from tierwise.cli._common import (
    DbOption,
    console,
    fail,
    load_settings,
    open_session,
    resolve_policy,
)
from tierwise.cli.render import render_applied

app = typer.Typer(help="Routing policies.", no_args_is_help=True)

PolicyArgument = Annotated[
    Path,
    typer.Argument(help="Policy TOML file, or the name of a built-in policy (default, replay)."),
]


def _load(file_or_name: Path) -> Policy:
    """The validated policy a command line names (a file, or a built-in policy's name).

    Raises:
        typer.Exit: code 2, after one line naming the problem, when it cannot be read or is
            not valid.
    """
    try:
        return load_policy(resolve_policy(file_or_name))
    except TierwiseError as exc:
        fail(exc)


@app.command("apply")
def policy_apply(file: PolicyArgument, database_url: DbOption = None) -> None:
    """Validate a policy file and load it into the routing table (bumps the table version)."""
    settings = load_settings(database_url)
    policy = _load(file)
    migrate.upgrade(settings.database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            result = await apply_policy(session, policy)
            await session.commit()
        console.print(render_applied(policy, result))

    asyncio.run(main())


@app.command("check")
def policy_check(file: PolicyArgument) -> None:
    """Validate a policy file without applying it, and warn for every judge-graded class whose
    judge is not calibrated: such a class is graded and reported but never escalates."""
    policy = _load(file)
    console.print(f"policy '{policy.name}' is valid: {len(policy.spec.rules)} rules")
    for c in uncalibrated_classes(policy):
        console.print(
            f"warning: class '{c.task_class}' ({c.grader}, judge {c.judge}) will never escalate: "
            f"{c.why}",
            soft_wrap=True,
            markup=False,
        )
