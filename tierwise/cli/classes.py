"""``tierwise class``: operators' changes to a task class (pin, unpin, override), the same
functions the API's operator endpoints call, and ``why``: the evidence behind its latest
escalation event (what ``GET /v1/escalations/{id}`` shows)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation import override_class, pin_class, unpin_class
from evaluator.evidence import MAX_LIMIT, escalation_evidence, evidence_json
from evaluator.models import EscalationEvent
from router.errors import InvalidInput, NotFound
from tierwise.cli._common import DbOption, console, load_settings, open_session, run
from tierwise.cli.render import render_event, render_evidence, render_evidence_head

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


@app.command("why")
def class_why(
    task_class: TaskClassArgument,
    event: Annotated[
        int | None, typer.Option(help="The escalation event's id (default: the class's latest).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT, help="Samples a page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor.")] = None,
    verdict: Annotated[
        str | None, typer.Option(help="Only agree, disagree, invalid or refused samples.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    database_url: DbOption = None,
) -> None:
    """Why a class is where it is: its latest escalation event (or --event) and the graded
    samples behind it: input, answer, the reference's answer or the judge's explanation and
    score, verdict; paged."""
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            event_id = event
            if event_id is None:
                found = (
                    await session.exec(
                        select(EscalationEvent.id)
                        .where(EscalationEvent.task_class == task_class)
                        .order_by(col(EscalationEvent.id).desc())
                        .limit(1)
                    )
                ).first()
                if found is None:
                    raise NotFound(
                        f"class '{task_class}' has no escalation event", field="task_class"
                    )
                event_id = found
            ev = await escalation_evidence(
                session, event_id, limit=limit, cursor=cursor, verdict=verdict
            )
        if ev.event.task_class != task_class:
            raise InvalidInput(
                f"event {event_id} is about class '{ev.event.task_class}', not '{task_class}'",
                field="event",
            )
        if as_json:
            typer.echo(json.dumps(evidence_json(ev), indent=2, default=str))
            return
        for line in render_evidence_head(ev):
            console.print(line, soft_wrap=True, markup=False)
        console.print(render_evidence(ev))
        if ev.next_cursor is not None:
            console.print(f"next page: --cursor {ev.next_cursor}", markup=False)

    run(main())
