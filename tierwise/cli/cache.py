"""``tierwise cache``: the semantic cache's cold start (``warm``) and its books (``books``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from evaluator.cache_books import cache_books
from evaluator.costs import parse_range
from evaluator.stats import RateEstimate
from router.cache import MemoryStore, PgVectorStore, WordLlamaEmbedder, namespace_of
from router.cache.store import CacheStore
from router.cache.warm import warm
from router.db import make_engine, session_factory
from router.errors import InvalidInput, TierwiseError
from router.money import usd
from router.service import NoPolicy
from router.table import load_snapshot
from tierwise.cli._common import DbOption, console, fail, load_settings, open_session, run

app = typer.Typer(help="The semantic cache.", no_args_is_help=True)


def _items(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file", field="dataset")
    items: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise InvalidInput(f"{path}:{number}: not JSON: {exc}", field="dataset") from exc
    return items


@app.command("warm")
def cache_warm(
    dataset: Annotated[Path, typer.Argument(help="JSONL: messages or text, and an answer.")],
    task_type: Annotated[str, typer.Option("--task-type", help="Task type the items are.")],
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="The caller key the entries belong to.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="An explicit namespace within the key.")
    ] = None,
    database_url: DbOption = None,
) -> None:
    """Fill the cache from a held-out set or exported traffic (offline wordllama embeddings),
    for the tenant a key (and namespace) names and the model the class is routed to now."""
    settings = load_settings(database_url)
    items = _items(dataset)

    async def main() -> None:
        engine = make_engine(settings.database_url)
        try:
            sessions = session_factory(engine)
            async with sessions() as session:
                snapshot = await load_snapshot(session)
            if snapshot is None:
                raise NoPolicy("no routing policy applied yet: run `tierwise policy apply`")
            store: CacheStore = (
                PgVectorStore(sessions)
                if engine.dialect.name == "postgresql"
                else MemoryStore(sessions, max_entries=len(items) + 1)
            )
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("warming", total=len(items))
                result = await warm(
                    items,
                    snapshot=snapshot,
                    store=store,
                    embedder=WordLlamaEmbedder(),
                    task_type=task_type,
                    namespace=namespace_of(key_id, namespace),
                    progress=lambda n: progress.advance(task, n),
                )
        finally:
            await engine.dispose()
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items())) or "none"
        console.print(
            f"stored {result.stored} entries for class {result.task_class} on {result.model} "
            f"(skipped: {skipped})"
        )

    run(main())


def _pct(estimate: RateEstimate) -> str:
    if estimate.rate is None or estimate.ci_low is None or estimate.ci_high is None:
        return "-"
    return f"{estimate.rate:.1%} [{estimate.ci_low:.1%}, {estimate.ci_high:.1%}]"


@app.command("books")
def cache_books_command(
    since: Annotated[
        str | None, typer.Option(help="From (inclusive): ISO date or datetime, UTC.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="To (exclusive; a bare date includes that day): ISO, UTC."),
    ] = None,
    database_url: DbOption = None,
) -> None:
    """Per class: lookups, hit rate and false-hit rate (95% Wilson intervals), what hits saved
    and the embedding spend (USD)."""
    try:
        start, end = parse_range(since, until)
    except TierwiseError as exc:
        fail(exc)
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            books = await cache_books(session, start, end)
        table = Table(
            "task class",
            "lookups",
            "hits",
            "bypassed",
            "hit rate",
            "false-hit rate",
            "graded",
            "saved USD",
            "embedding USD",
        )
        for b in books:
            table.add_row(
                b.task_class,
                str(b.lookups),
                str(b.hits),
                str(b.bypasses),
                _pct(b.hit_rate),
                _pct(b.false_hit_rate),
                str(b.false_hit_rate.n),
                f"{usd(b.saved_nusd):.6f}"
                + (f" (+{b.unpriced_hits} unpriced)" if b.unpriced_hits else ""),
                f"{usd(b.embedding_nusd):.6f}",
            )
        console.print(table)

    run(main())
