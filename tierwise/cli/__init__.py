"""The ``tierwise`` command line (typer). Composition only: every command wires settings, the
database and the planes, then calls into ``router`` / ``evaluator``."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from sqlmodel import func, select

from evaluator import replay as replay_mod
from evaluator.datasets import load_held_out
from evaluator.escalation import override_class, pin_class, unpin_class
from evaluator.report import Books, ClassReport, books, class_reports
from evaluator.service import replay_env
from router.db import make_engine, session_factory
from router.errors import PolicyError, TierwiseError
from router.models import Decision
from router.policy import builtin_policy_names, builtin_policy_path, load_policy
from router.table import apply_policy, load_snapshot
from tierwise import migrate
from tierwise.app import create_app
from tierwise.eval_cli import eval_app
from tierwise.planes import run_worker
from tierwise.settings import Settings

app = typer.Typer(help="tierwise: adaptive LLM routing with sampled grading.", no_args_is_help=True)
policy_app = typer.Typer(help="Routing policies.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
app.add_typer(eval_app, name="eval")
class_app = typer.Typer(help="Operators' changes to a task class.", no_args_is_help=True)
app.add_typer(class_app, name="class")
console = Console(width=None if Console().is_terminal else 160)

DbOption = Annotated[
    str | None, typer.Option("--database-url", help="Overrides TIERWISE_DATABASE_URL.")
]


def _settings(database_url: str | None, **overrides: object) -> Settings:
    settings = Settings()
    update: dict[str, object] = dict(overrides)
    if database_url:
        update["database_url"] = database_url
    return settings.model_copy(update=update)


PolicyArgument = Annotated[
    Path,
    typer.Argument(help="Policy TOML file, or the name of a built-in policy (default, replay)."),
]


def _policy_file(file_or_name: Path) -> Path:
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


def _fail(exc: TierwiseError) -> None:
    console.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}", soft_wrap=True)
    raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade(database_url: DbOption = None) -> None:
    """Create or migrate the schema (alembic upgrade head)."""
    settings = _settings(database_url)
    migrate.upgrade(settings.database_url)
    console.print(f"schema at head on {migrate.make_url_safe(settings.database_url)}")


@policy_app.command("apply")
def policy_apply(file: PolicyArgument, database_url: DbOption = None) -> None:
    """Validate a policy file and load it into the routing table (bumps the table version)."""
    settings = _settings(database_url)
    try:
        policy = load_policy(_policy_file(file))
    except TierwiseError as exc:
        _fail(exc)
        return
    migrate.upgrade(settings.database_url)

    async def main() -> None:
        engine = make_engine(settings.database_url)
        try:
            async with session_factory(engine)() as session:
                result = await apply_policy(session, policy)
                await session.commit()
        finally:
            await engine.dispose()
        console.print(
            f"applied policy '{policy.name}': table version {result.version}; "
            f"{len(result.created)} classes created, {len(result.updated)} updated, "
            f"{len(result.kept)} kept (escalated/pinned/probation)"
        )

    asyncio.run(main())


@policy_app.command("check")
def policy_check(file: PolicyArgument) -> None:
    """Validate a policy file without applying it."""
    try:
        policy = load_policy(_policy_file(file))
    except TierwiseError as exc:
        _fail(exc)
        return
    console.print(f"policy '{policy.name}' is valid: {len(policy.spec.rules)} rules")


ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept on the event).")]
ActorOption = Annotated[str, typer.Option("--actor", help="Who (kept on the event).")]


def _manual_change(
    database_url: str | None, change: str, task_class: str, **kwargs: object
) -> None:
    """Run one operator change (the API's functions) and print the escalation event."""
    settings = _settings(database_url)
    ops = {"pin": pin_class, "unpin": unpin_class, "override": override_class}

    async def main() -> None:
        engine = make_engine(settings.database_url)
        try:
            async with session_factory(engine)() as session:
                event = await ops[change](session, task_class, **kwargs)  # type: ignore[operator]
                await session.commit()
        finally:
            await engine.dispose()
        console.print(
            f"{event.task_class}: {event.from_model} ({event.from_status}) -> {event.to_model} "
            f"({event.to_status}), table version {event.table_version}, by {event.actor}"
        )

    try:
        asyncio.run(main())
    except TierwiseError as exc:
        _fail(exc)


@class_app.command("pin")
def class_pin(
    task_class: Annotated[str, typer.Argument(help="Task class.")],
    reason: ReasonOption,
    actor: ActorOption = "operator",
    database_url: DbOption = None,
) -> None:
    """Freeze a class on its current model: not sampled, never changed by the escalation job."""
    _manual_change(database_url, "pin", task_class, actor=actor, reason=reason)


@class_app.command("unpin")
def class_unpin(
    task_class: Annotated[str, typer.Argument(help="Task class.")],
    reason: ReasonOption,
    actor: ActorOption = "operator",
    database_url: DbOption = None,
) -> None:
    """Hand a pinned class back to the escalation job."""
    _manual_change(database_url, "unpin", task_class, actor=actor, reason=reason)


@class_app.command("override")
def class_override(
    task_class: Annotated[str, typer.Argument(help="Task class.")],
    model: Annotated[str, typer.Option("--model", help="Catalog model to move the class to.")],
    reason: ReasonOption,
    actor: ActorOption = "operator",
    pin: Annotated[bool, typer.Option(help="Also pin the class there.")] = False,
    database_url: DbOption = None,
) -> None:
    """Move a class to a model (up or down the ladder), optionally pinned there."""
    _manual_change(
        database_url, "override", task_class, model=model, actor=actor, reason=reason, pin=pin
    )


@app.command("routing-table")
def routing_table(database_url: DbOption = None) -> None:
    """Print the routing table."""
    settings = _settings(database_url)

    async def main() -> None:
        engine = make_engine(settings.database_url)
        try:
            async with session_factory(engine)() as session:
                snap = await load_snapshot(session)
        finally:
            await engine.dispose()
        if snap is None:
            console.print("no policy applied yet: run `tierwise policy apply FILE|default`")
            return
        table = Table(title=f"routing table v{snap.version} (policy {snap.policy.name})")
        for col in ("task class", "tier", "model", "status", "version"):
            table.add_column(col)
        for e in sorted(snap.entries.values(), key=lambda e: e.task_class):
            table.add_row(e.task_class, e.tier, e.model, e.status, str(e.version))
        console.print(table)

    asyncio.run(main())


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    database_url: DbOption = None,
) -> None:
    """Run the service (data plane and, unless TIERWISE_RUN_SCHEDULER=false, the jobs)."""
    import uvicorn

    settings = _settings(database_url)
    migrate.upgrade(settings.database_url)
    logging.basicConfig(level=settings.log_level)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())


@app.command()
def worker(database_url: DbOption = None) -> None:
    """Run the scheduled jobs (grading, escalation) without serving HTTP, so routers and
    workers scale apart. Stops on SIGINT or SIGTERM."""
    settings = _settings(database_url)
    migrate.upgrade(settings.database_url)
    logging.basicConfig(level=settings.log_level)
    asyncio.run(run_worker(settings))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def render_classes(reports: list[ClassReport]) -> Table:
    """Per-class table: traffic, graded samples, the evidence window (for an escalated class the
    escalation's evidence, else the current window), status, model now, and the grades without
    a verdict (invalid + refused, field case J2) with their share of all grades."""
    table = Table(title="task classes", title_justify="left")
    numeric = ("routed", "graded", "evidence k/n", "rate", "no verdict")
    for col in (
        "task class",
        "routed",
        "graded",
        "evidence k/n",
        "rate",
        "95% interval",
        "status",
        "model now",
        "no verdict",
    ):
        table.add_column(
            col,
            justify="right" if col in numeric else "left",
            no_wrap=col in ("task class", "95% interval", "status", "model now"),
        )
    for r in reports:
        ev = r.last_escalation
        if r.state.status == "escalated" and ev is not None:
            n, k, rate, lo, hi = ev.n, ev.k, ev.rate, ev.ci_low, ev.ci_high
        else:
            est = r.state.decision.estimate
            n, k, rate, lo, hi = est.n, est.k, est.rate, est.ci_low, est.ci_high
        interval = "-" if lo is None else f"{lo:.1%} .. {_pct(hi)}"
        table.add_row(
            r.task_class,
            str(r.routed),
            str(r.graded_total),
            f"{k}/{n}",
            _pct(rate),
            interval,
            r.label,
            r.state.model,
            f"{r.invalid_total} ({_pct(r.invalid_rate)})",
        )
    return table


def render_books(b: Books, requests: int) -> str:
    saved = 0.0 if b.premium_usd == 0 else b.savings_usd / b.premium_usd
    lines = [
        f"requests: {requests}   outcomes priced: {b.outcomes - b.unpriced_outcomes}"
        f" (unpriced: {b.unpriced_outcomes})",
        f"serving cost:  ${b.serving_usd:,.4f}",
        f"grading spend: ${b.grading_usd:,.4f}"
        + (f" (unpriced grades: {b.unpriced_grades})" if b.unpriced_grades else ""),
        f"total:         ${b.total_usd:,.4f}",
        f"all on {b.premium_model}: ${b.premium_usd:,.4f}",
        f"saved:         ${b.savings_usd:,.4f} ({saved:.1%})",
    ]
    return "\n".join(lines)


@app.command()
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
    database_url: DbOption = None,
) -> None:
    """Drive the service with recorded traffic: route, outcomes, sampling, grading, escalation;
    then print per-class results and the books."""
    settings = _settings(database_url, run_scheduler=False)
    try:
        policy = load_policy(
            _policy_file(policy_file) if policy_file else builtin_policy_path("replay")
        )
        sets = [load_held_out(p) for p in datasets]
    except TierwiseError as exc:
        _fail(exc)
        return
    if reset:
        migrate.reset(settings.database_url)
    else:
        migrate.upgrade(settings.database_url)
    started = time.perf_counter()

    async def main() -> None:
        service = create_app(settings, env_factory=lambda: replay_env(sets))
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
                        on_progress=lambda n: progress.advance(task, n),
                    )
            async with sessions() as session:
                reports = await class_reports(session)
                the_books = await books(session)
        console.print(render_classes(reports))
        console.print(render_books(the_books, sent))
        console.print(f"done in {time.perf_counter() - started:.1f} s")

    try:
        asyncio.run(main())
    except TierwiseError as exc:
        _fail(exc)


@app.command()
def report(database_url: DbOption = None) -> None:
    """Per-class quality and the books of what the database holds."""
    settings = _settings(database_url)

    async def main() -> None:
        engine = make_engine(settings.database_url)
        try:
            async with session_factory(engine)() as session:
                reports = await class_reports(session)
                the_books = await books(session)
        finally:
            await engine.dispose()
        console.print(render_classes(reports))
        console.print(render_books(the_books, the_books.outcomes))

    asyncio.run(main())


def main() -> None:
    """Console entry point: a TierwiseError anywhere is one line and exit code 2, not a
    traceback."""
    try:
        app()
    except TierwiseError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}", soft_wrap=True)
        raise SystemExit(2) from None
