"""``tierwise class``: operators' changes to a task class (pin, unpin, override), the same
functions the API's operator endpoints call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation import override_class, pin_class, unpin_class
from evaluator.models import EscalationEvent
from tierwise.cli._common import DbOption, console, load_settings, open_session, run
from tierwise.cli.render import render_event

app = typer.Typer(help="Operators' changes to a task class.", no_args_is_help=True)

TaskClassArgument = Annotated[str, typer.Argument(help="Task class.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept on the event).")]
ActorOption = Annotated[str, typer.Option("--actor", help="Who (kept on the event).")]

Change = Callable[[AsyncSession], Awaitable[EscalationEvent]]
"""One operator change on a session: flushes and returns its escalation event."""


def _change(database_url: str | None, change: Change) -> None:
    """Run one operator change in its own transaction and print the escalation event.

    Raises:
        typer.Exit: code 2, after one line naming the problem, on a TierwiseError (unknown
            class or model, no policy, nothing would change).
    """
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            event = await change(session)
            await session.commit()
        console.print(render_event(event))

    run(main())


@app.command("pin")
def class_pin(
    task_class: TaskClassArgument,
    reason: ReasonOption,
    actor: ActorOption = "operator",
    database_url: DbOption = None,
) -> None:
    """Freeze a class on its current model: not sampled, never changed by the escalation job."""
    _change(database_url, lambda s: pin_class(s, task_class, actor=actor, reason=reason))


@app.command("unpin")
def class_unpin(
    task_class: TaskClassArgument,
    reason: ReasonOption,
    actor: ActorOption = "operator",
    database_url: DbOption = None,
) -> None:
    """Hand a pinned class back to the escalation job."""
    _change(database_url, lambda s: unpin_class(s, task_class, actor=actor, reason=reason))


@app.command("override")
def class_override(
    task_class: TaskClassArgument,
    model: Annotated[str, typer.Option("--model", help="Catalog model to move the class to.")],
    reason: ReasonOption,
    actor: ActorOption = "operator",
    pin: Annotated[bool, typer.Option(help="Also pin the class there.")] = False,
    database_url: DbOption = None,
) -> None:
    """Move a class to a model (up or down the ladder), optionally pinned there."""
    _change(
        database_url,
        lambda s: override_class(s, task_class, model=model, actor=actor, reason=reason, pin=pin),
    )
