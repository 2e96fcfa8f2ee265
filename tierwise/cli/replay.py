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
from rich.table import Table
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator import replay as replay_mod
from evaluator.costs import parse_range
from evaluator.datasets import load_held_out, replay_provider
from evaluator.report import (
    Books,
    CacheClassReport,
    ClassReport,
    VerdictDelay,
    books,
    cache_reports,
    class_reports,
    report_json,
    verdict_delays,
)
from evaluator.service import replay_env
from evaluator.stats import RateEstimate
from router.errors import InvalidInput, TierwiseError
from router.models import Decision
from router.money import usd
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

Report = tuple[list[ClassReport], Books, list[VerdictDelay], list[CacheClassReport]]


async def _read_report(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None
) -> Report:
    """Per-class reports, the books, the time from sample to verdict and the semantic cache
    per class over ``[since, until)``, in one session."""
    return (
        await class_reports(session, since=since, until=until),
        await books(session, since=since, until=until),
        await verdict_delays(session, since=since, until=until),
        await cache_reports(session, since=since, until=until),
    )


def _rate(est: RateEstimate) -> str:
    """``12.5% [8.1%, 18.8%]`` (95% Wilson interval); ``-`` without data."""
    if est.rate is None or est.ci_low is None or est.ci_high is None:
        return "-"
    return f"{est.rate:.1%} [{est.ci_low:.1%}, {est.ci_high:.1%}]"


def _money(nusd: int) -> str:
    """Nano-USD as USD with as many decimals as it needs (2 to 9): an embedding lookup costs
    fractions of a micro-dollar."""
    text = f"{usd(nusd) or 0.0:,.9f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _render_cache(rows: list[CacheClassReport]) -> Table:
    """Per class with cache lookups: lookups, hits, hit rate, graded and false hits, the
    false-hit rate with its 95% Wilson interval, the threshold and status now, what hits saved
    and the embedding spend (USD; unpriced rows counted beside)."""
    table = Table(title="semantic cache", title_justify="left")
    numeric = ("lookups", "hits", "graded", "false", "threshold", "saved", "embedding")
    for head in (
        "task class",
        "lookups",
        "hits",
        "hit rate",
        "graded",
        "false",
        "false-hit rate [95%]",
        "threshold",
        "status",
        "saved",
        "embedding",
    ):
        table.add_column(head, justify="right" if head in numeric else "left")
    for r in rows:
        b, s = r.books, r.setting
        hit_rate = "-" if b.hit_rate.rate is None else f"{b.hit_rate.rate:.1%}"
        threshold = "-" if s is None else f"{s.threshold:.3f} ({s.source})"
        saved = _money(b.saved_nusd) + (
            f" (+{b.unpriced_hits} unpriced)" if b.unpriced_hits else ""
        )
        embedding = _money(b.embedding_nusd) + (
            f" (+{b.unpriced_embeddings} unpriced)" if b.unpriced_embeddings else ""
        )
        table.add_row(
            b.task_class,
            str(b.lookups),
            str(b.hits),
            hit_rate,
            str(b.false_hit_rate.n),
            str(b.false_hit_rate.k),
            _rate(b.false_hit_rate),
            threshold,
            "-" if s is None else s.status,
            saved,
            embedding,
        )
    return table


def _print_report(report: Report, requests: int, *, replayed: bool = False) -> None:
    reports, the_books, delays, cache = report
    console.print(render_classes(reports))
    if cache:
        console.print(_render_cache(cache))
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
