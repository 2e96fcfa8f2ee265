"""``tierwise cache``: the semantic cache's cold start (``warm``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from router.cache import MemoryStore, PgVectorStore, WordLlamaEmbedder, namespace_of
from router.cache.store import CacheStore
from router.cache.warm import warm
from router.db import make_engine, session_factory
from router.errors import InvalidInput
from router.service import NoPolicy
from router.table import load_snapshot
from tierwise.cli._common import DbOption, console, load_settings, run

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
