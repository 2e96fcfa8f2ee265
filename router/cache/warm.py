"""Cold start: fill the cache from a held-out set or exported traffic before any traffic.

Each item is a request and its answer: ``messages`` (an OpenAI message list) or a single user
turn in ``text`` / ``prompt`` / ``question``; the answer in ``answer`` / ``output_text`` /
``reference`` / ``label``. Items are keyed exactly as the gateway keys a call of
``task_type`` from the tenant ``namespace`` (:mod:`router.cache.keys`), for the model the
class is routed to now and its current route, so they serve hits as soon as the stage sees
them (on SQLite: once the serving process loads them at start). An item that cannot be keyed
(a tool result, an image, no user turn) or has no answer is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from router.cache.embed import Embedder
from router.cache.keys import cache_key
from router.cache.store import CacheStore, new_entry_id
from router.db import utcnow
from router.errors import InvalidInput
from router.table import RoutingSnapshot
from router.tokens import estimate_message_tokens

QUERY_FIELDS = ("text", "prompt", "question")
ANSWER_FIELDS = ("answer", "output_text", "reference", "label")


@dataclass(frozen=True, slots=True)
class WarmResult:
    """``stored`` entries; ``skipped`` items by reason; the class and model they serve."""

    task_class: str
    model: str
    stored: int
    skipped: dict[str, int]


def _request(item: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, str | None]:
    messages = item.get("messages")
    if not isinstance(messages, list):
        query = next((item[f] for f in QUERY_FIELDS if isinstance(item.get(f), str)), None)
        messages = [{"role": "user", "content": query}] if query is not None else None
    answer = next((str(item[f]) for f in ANSWER_FIELDS if item.get(f) is not None), None)
    return messages, answer


async def warm(
    items: Iterable[Mapping[str, Any]],
    *,
    snapshot: RoutingSnapshot,
    store: CacheStore,
    embedder: Embedder,
    task_type: str,
    namespace: str,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> WarmResult:
    """Store an entry for every item that can be keyed (see the module doc).

    Raises:
        InvalidInput: the class of ``task_type`` is ``cache = false`` (field ``task_type``).
    """
    match = snapshot.policy.match(task_type, 0, False)
    settings = snapshot.policy.settings_for(match.task_class)
    if not settings.cache:
        raise InvalidInput(
            f"task class '{match.task_class}' is cache = false in the policy", field="task_type"
        )
    entry = snapshot.entries.get(match.task_class)
    model = entry.model if entry is not None else snapshot.policy.model_for_tier(match.tier)
    route_version = entry.version if entry is not None else 0
    skipped: dict[str, int] = {}
    stored = 0
    pending: list[tuple[Any, list[dict[str, Any]], str]] = []

    async def flush() -> None:
        nonlocal stored
        if not pending:
            return
        embedded = await embedder.embed([k.query for k, _, _ in pending])
        now = utcnow()
        rows = [
            {
                "id": new_entry_id(),
                "namespace": namespace,
                "task_class": match.task_class,
                "model": model,
                "route_version": route_version,
                "scope": key.scope,
                "key_hash": key.key_hash,
                "embedder": embedder.name,
                "dim": embedder.dim,
                "embedding": embedded.vectors[i],
                "query_text": key.query,
                "answer_text": answer,
                "response": {
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                },
                "usage": {
                    "prompt_tokens": estimate_message_tokens(messages),
                    "completion_tokens": max(1, len(answer) // 4),
                },
                "min_similarity": None,
                "created_at": now,
                "expires_at": now + timedelta(seconds=settings.cache_ttl_s),
            }
            for i, (key, messages, answer) in enumerate(pending)
        ]
        await store.put(rows)
        stored += len(rows)
        if progress is not None:
            progress(len(rows))
        pending.clear()

    for item in items:
        messages, answer = _request(item)
        if messages is None or answer is None:
            skipped["no_request_or_answer"] = skipped.get("no_request_or_answer", 0) + 1
            continue
        key = cache_key(
            {"messages": messages},
            namespace=namespace,
            task_class=match.task_class,
            model=model,
            route_version=route_version,
            max_temperature=None,
        )
        if isinstance(key, str):
            skipped[key] = skipped.get(key, 0) + 1
            continue
        pending.append((key, messages, answer))
        if len(pending) >= batch_size:
            await flush()
    await flush()
    return WarmResult(match.task_class, model, stored, skipped)
