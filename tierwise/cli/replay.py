"""``tierwise replay`` (recorded traffic through the whole service) and ``tierwise report``
(what the database holds): both print per-class quality and the books. Top-level commands: the
package registers these functions on its app."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator import replay as replay_mod
from evaluator.costs import parse_range
from evaluator.datasets import load_held_out, replay_provider
from evaluator.report import (
    Books,
    ClassReport,
    VerdictDelay,
    books,
    class_reports,
    report_json,
    verdict_delays,
)
from evaluator.service import replay_env
from router.errors import InvalidInput, TierwiseError
from router.models import Decision
from router.policy import builtin_policy_path, load_policy
from router.table import apply_policy
from tierwise import migrate
from tierwise.app import create_app
from tierwise.cli._common import (
    DbOption,
    console,
    fail,
    load_settings,
    open_session,
    resolve_policy,
    run,
)
from tierwise.cli.render import render_books, render_classes, render_delays

Report = tuple[list[ClassReport], Books, list[VerdictDelay]]


async def _read_report(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None
) -> Report:
    """Per-class reports, the books and the time from sample to verdict over
    ``[since, until)``, in one session."""
    return (
        await class_reports(session, since=since, until=until),
        await books(session, since=since, until=until),
        await verdict_delays(session, since=since, until=until),
    )


def _print_report(report: Report, requests: int, *, replayed: bool = False) -> None:
    reports, the_books, delays = report
    console.print(render_classes(reports))
    console.print(render_books(the_books, requests))
    console.print(render_delays(delays, compressed=replayed))


def replay(
    datasets: Annotated[list[Path], typer.Argument(help="Held-out JSONL files from datasets/.")],
    per_class: Annotated[int, typer.Option(help="Requests drawn per task class.", min=1)] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the draw and of the decision ids.")] = 7,
    tick: Annotated[int, typer.Option(help="Run the jobs every N requests.", min=1)] = 500,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file or built-in name (default: replay)."),
    ] = None,
    reset: Annotated[
        bool, typer.Option(help="Drop and rebuild every tierwise table first.")
    ] = False,
    via: Annotated[
        str,
        typer.Option(
            help="api: POST /v1/route then /v1/outcomes, as an application reports; gateway: "
            "POST /v1/chat/completions, with the recorded answers as the upstream."
        ),
    ] = "api",
    grading: Annotated[
        str,
        typer.Option(
            help="realtime: as the policy says (the grading job); batch: every class graded "
            "through the replay provider's batch mode, the submit and poll jobs run each tick."
        ),
    ] = "realtime",
    lane: Annotated[
        str,
        typer.Option(
            help="realtime: answered in the call; batch: through the gateway's batch lane "
            "(implies --via gateway): queued, sent through the replay provider's batch mode "
            "each tick and booked at the batch discount."
        ),
    ] = "realtime",
    database_url: DbOption = None,
) -> None:
    """Drive the service with recorded traffic: route, outcomes, sampling, grading, escalation;
    then print per-class results, the books and the time from sample to verdict per mode."""
    if via not in ("api", "gateway"):
        fail(InvalidInput(f"--via must be api or gateway, not {via!r}", field="via"))
    if grading not in ("realtime", "batch"):
        fail(InvalidInput(f"--grading must be realtime or batch, not {grading!r}", field="grading"))
    if lane not in ("realtime", "batch"):
        fail(InvalidInput(f"--lane must be realtime or batch, not {lane!r}", field="lane"))
    if lane == "batch":
        via = "gateway"
    settings = load_settings(database_url, run_scheduler=False)
    try:
        policy = load_policy(
            resolve_policy(policy_file) if policy_file else builtin_policy_path("replay")
        )
        if grading == "batch":
            policy = replay_mod.with_grading(policy, "batch")
        sets = [load_held_out(p) for p in datasets]
    except TierwiseError as exc:
        fail(exc)
    if reset:
        migrate.reset(settings.database_url)
    else:
        migrate.upgrade(settings.database_url)
    started = time.perf_counter()

    async def main() -> None:
        service = create_app(
            settings,
            env_factory=lambda: replay_env(sets),
            gateway_upstream=replay_provider(sets) if via == "gateway" else None,
            spool=False,
        )
        async with service.router.lifespan_context(service):
            sessions = service.state.sessions
            async with sessions() as session:
                existing = (await session.exec(select(func.count()).select_from(Decision))).one()
                if existing:
                    raise TierwiseError(
                        f"the database already holds {existing} decisions; "
                        "pass --reset to start the replay from an empty one"
                    )
                await apply_policy(session, policy)
                await session.commit()
            await service.state.router.refresh(force=True)
            the_plan = replay_mod.plan(sets, per_class=per_class, seed=seed)
            transport = httpx.ASGITransport(app=service)
            async with httpx.AsyncClient(transport=transport, base_url="http://tierwise") as client:
                with Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                ) as progress:
                    task = progress.add_task("replaying", total=len(the_plan.items))
                    sent = await replay_mod.run(
                        client,
                        service.state.router,
                        service.state.evaluator,
                        the_plan,
                        tick=tick,
                        via="gateway" if via == "gateway" else "api",
                        grading="batch" if grading == "batch" else "realtime",
                        lane=service.state.lane if lane == "batch" else None,
                        on_progress=lambda n: progress.advance(task, n),
                    )
            async with sessions() as session:
                the_report = await _read_report(session)
        _print_report(the_report, sent, replayed=True)
        console.print(f"done in {time.perf_counter() - started:.1f} s")

    run(main())


def report(
    since: Annotated[
        str | None, typer.Option(help="From this UTC date or ISO datetime (inclusive).")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="To this UTC date (that whole day included) or ISO datetime."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    database_url: DbOption = None,
) -> None:
    """Per-class quality and the books of what the database holds, over [--since, --until)
    (decisions, outcomes and grades by their own time; the rule's state is as of now)."""
    settings = load_settings(database_url)
    try:
        start, end = parse_range(since, until)
    except TierwiseError as exc:
        fail(exc)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            the_report = await _read_report(session, since=start, until=end)
        if as_json:
            typer.echo(json.dumps(report_json(*the_report, since=start, until=end), indent=2))
            return
        _print_report(the_report, the_report[1].outcomes)

    run(main())
