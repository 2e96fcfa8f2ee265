"""Semantic cache benchmark: hit and false-hit rates of static thresholds against tierwise's
guard on support-bot traffic, and lookup latency of the two stores.

**Traffic.** Banking77's test set (3,080 queries, 77 intents) and CLINC150's in-scope test set
(4,500 queries, 150 intents; the 1,000 out-of-scope queries are left out: "oos" names no one
answer), from ``datasets/`` (attribution in datasets/README.md), each one task class of a
support bot. The queries are shuffled (``--seed``) and replayed in order: every query looks
up the cache of its class; a miss is answered upstream and stored (the answer being the
query's intent), a hit is served the cached answer. A hit is **right** when the cached query's
intent is the new query's, **false** otherwise. Embeddings: wordllama (offline, 256
dimensions), the cache's default. The search is exact (cosine over every stored entry of the
class), as the SQLite store does.

Columns, per dataset: ``static 0.80`` (a common default), ``static 0.92`` (a published
recommendation) and ``guard``: the threshold starts at the policy default (0.92) and
tierwise's quality guard (:func:`evaluator.cache_guard.guard_rule`, the job's rule) moves it;
a hash-chosen share of hits (``--sample-rate``, by BLAKE2b of the query id, as
:func:`router.sampling.is_sampled`) is graded (the reference's answer is the new query's
intent; the exact grader compares it with the cached intent) and the rule runs every
``--tick`` queries on the graded hits so far; at the same ticks each graded false hit raises
its entry's own bar to the similarity it hit at + ``STEP`` (past 1.0 the entry is retired), as
the guard job does, and a lookup serves the best of the 4 nearest entries that clears both
bars, as the stage does. Hit rate = hits / queries, false-hit rate =
false hits / hits, each with its 95% Wilson interval over every hit (not just the graded).
``half cached`` repeats the issue's reference protocol for the static thresholds: half of each
set cached up front, the other half looked up, nothing stored (the issue: Banking77 at 0.92
hits 11.5%, 4.5% wrong; 0.80: 49%, 9.3% wrong; CLINC150 at 0.92 hits 15.5%, 1.4% wrong).

**Latency.** :meth:`router.cache.store.PgVectorStore.nearest`, the stage's own query (HNSW,
cosine, ``ef_search`` 40, iterative scan), on a scratch PostgreSQL database migrated to head
and filled by binary ``COPY`` with 10^4, 10^5 (and with ``--million`` 10^6) entries of one scope,
the HNSW index built after the load; and :meth:`router.cache.store.MemoryStore.nearest` (the
SQLite path, exact in memory) at 10^4. Entries are the real query embeddings of both sets plus
Gaussian noise (sigma ``0.3/sqrt(256)`` per dimension, renormalised), so the index sees
clustered, realistic vectors; lookups are the Banking77 queries' embeddings. p50/p99 over
``--lookups`` lookups after 50 untimed ones; ``recall@1`` is the share of lookups whose first
HNSW result is the exact nearest neighbour; ratios are against pgvector at 10^4 in the same
run. The scratch database is dropped afterwards.

    .venv/bin/python bench/cache.py [--json PATH] [--million] [--sample-rate 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluator.cache_guard import STEP, guard_rule  # noqa: E402
from evaluator.stats import wilson  # noqa: E402
from router.cache.embed import WordLlamaEmbedder  # noqa: E402
from router.cache.store import MemoryStore, PgVectorStore  # noqa: E402
from router.db import make_engine, session_factory, utcnow  # noqa: E402
from router.sampling import is_sampled  # noqa: E402
from tierwise import migrate  # noqa: E402

PG_ADMIN = os.environ.get("TIERWISE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DATASETS = {"banking77": "banking77.jsonl", "clinc150": "clinc150.jsonl"}


def load(name: str) -> list[dict[str, str]]:
    with (ROOT / "datasets" / DATASETS[name]).open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if r["label"] != "oos"]


@dataclass
class Tally:
    queries: int = 0
    hits: int = 0
    false_hits: int = 0
    graded: int = 0
    entry_bars: int = 0  # graded false hits that raised (or, past 1.0, retired) their entry's bar
    events: list[dict[str, Any]] = field(default_factory=list)
    threshold_end: float | None = None

    def figures(self) -> dict[str, Any]:
        hit = wilson(self.hits, self.queries)
        false = wilson(self.false_hits, self.hits)
        return {
            "queries": self.queries,
            "hits": self.hits,
            "false_hits": self.false_hits,
            "hit_rate": hit.rate,
            "hit_ci": [hit.ci_low, hit.ci_high],
            "false_hit_rate": false.rate,
            "false_hit_ci": [false.ci_low, false.ci_high],
            "graded": self.graded,
            "entry_bars": self.entry_bars,
            "threshold_end": self.threshold_end,
            "guard_events": self.events,
        }


def replay(
    ids: list[str],
    labels: list[str],
    vectors: np.ndarray[Any, Any],
    *,
    threshold: float,
    guard: bool,
    sample_rate: float,
    tick: int,
    target: float,
) -> Tally:
    """The streaming replay of the module doc, one class. With ``guard``, as the stage and the
    guard job do: the best of the 4 nearest entries that clears both the class's threshold and
    its own bar is served, and at every tick a graded false hit raises its entry's bar to the
    similarity it hit at + :data:`evaluator.cache_guard.STEP` (an entry past 1.0 is forgotten)."""
    tally = Tally()
    stored = np.zeros_like(vectors)
    stored_labels: list[str] = []
    bars = np.zeros(len(vectors), dtype=np.float32)
    evidence: list[tuple[float, bool]] = []
    false_graded: list[tuple[int, float]] = []  # (entry, similarity): the guard's next bars
    for i, (qid, label) in enumerate(zip(ids, labels, strict=True)):
        tally.queries += 1
        hit = False
        if stored_labels:
            scores = stored[: len(stored_labels)] @ vectors[i]
            nearest = np.argsort(-scores)[:4] if guard else [int(np.argmax(scores))]
            for best in (int(j) for j in nearest):
                similarity = float(scores[best])
                if similarity >= max(threshold, float(bars[best])):
                    hit = True
                    break
            if hit:
                tally.hits += 1
                wrong = stored_labels[best] != label
                tally.false_hits += wrong
                if guard and is_sampled(qid, sample_rate):
                    tally.graded += 1
                    evidence.append((similarity, wrong))
                    if wrong:
                        false_graded.append((best, similarity))
        if not hit:
            stored[len(stored_labels)] = vectors[i]
            stored_labels.append(label)
        if guard and (i + 1) % tick == 0 and false_graded:
            for entry, similarity in false_graded:
                bar = similarity + STEP
                bars[entry] = max(float(bars[entry]), bar if bar <= 1.0 else 2.0)
                tally.entry_bars += 1
            false_graded.clear()
        if guard and (i + 1) % tick == 0:
            change = guard_rule(threshold, evidence, target=target)
            if change is not None:
                tally.events.append(
                    {
                        "after_queries": i + 1,
                        "action": change.action,
                        "from": change.from_threshold,
                        "to": change.to_threshold,
                        "k": change.k,
                        "n": change.n,
                        "upper": change.upper,
                    }
                )
                if change.action == "off":
                    threshold = 2.0  # nothing hits any more
                elif change.to_threshold is not None:
                    threshold = change.to_threshold
    tally.threshold_end = threshold if threshold <= 1.0 else None
    return tally


def half_cached(labels: list[str], vectors: np.ndarray[Any, Any], threshold: float) -> Tally:
    half = len(labels) // 2
    scores = vectors[half:] @ vectors[:half].T
    best = scores.argmax(axis=1)
    sims = scores[np.arange(len(best)), best]
    tally = Tally(queries=len(best))
    for j, (b, s) in enumerate(zip(best, sims, strict=True)):
        if s >= threshold:
            tally.hits += 1
            tally.false_hits += labels[:half][int(b)] != labels[half + j]
    tally.threshold_end = threshold
    return tally


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def rate_cell(f: dict[str, Any], key: str, ci: str) -> str:
    lo, hi = f[ci]
    return f"{pct(f[key])} [{pct(lo)}, {pct(hi)}]"


# ---- latency ---------------------------------------------------------------------------------


def synthetic(base: np.ndarray[Any, Any], n: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    picks = base[rng.integers(0, len(base), n)]
    noisy = picks + rng.normal(0, 0.3 / np.sqrt(base.shape[1]), picks.shape).astype(np.float32)
    unit: np.ndarray[Any, Any] = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(
        np.float32
    )
    return unit


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


SCOPE = "b" * 64


async def pg_latency(
    sizes: list[int], base: np.ndarray[Any, Any], probes: np.ndarray[Any, Any], lookups: int
) -> list[dict[str, Any]]:
    name = f"tierwise_bench_cache_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await _admin(f'CREATE DATABASE "{name}"')
    base_url = PG_ADMIN.rsplit("/", 1)[0]
    url = f"{base_url}/{name}"
    results: list[dict[str, Any]] = []
    try:
        await asyncio.to_thread(
            migrate.upgrade, url.replace("postgresql://", "postgresql+asyncpg://")
        )
        rng = np.random.default_rng(7)
        loaded = 0
        conn = await asyncpg.connect(url)
        all_vectors = np.zeros((0, base.shape[1]), dtype=np.float32)
        try:
            for size in sizes:
                fresh = synthetic(base, size - loaded, rng)
                all_vectors = np.vstack([all_vectors, fresh])
                # The load goes in with no HNSW index (inserting into one is the slow path);
                # the index is built again over everything after it.
                await conn.execute("DROP INDEX IF EXISTS ix_cache_entry_hnsw_256")
                began = time.perf_counter()
                await _copy(conn, fresh, loaded)
                copy_s = time.perf_counter() - began
                loaded = size
                began = time.perf_counter()
                await conn.execute("SET maintenance_work_mem = '4GB'")
                await conn.execute(
                    "CREATE INDEX ix_cache_entry_hnsw_256 ON cache_entry USING hnsw "
                    "((embedding::vector(256)) vector_cosine_ops) WHERE dim = 256"
                )
                await conn.execute("ANALYZE cache_entry")
                index_s = time.perf_counter() - began
                timings, recall = await _time_store(
                    PgVectorStore, url, probes, lookups, all_vectors
                )
                results.append(
                    {
                        "store": "pgvector",
                        "entries": size,
                        "copy_s": round(copy_s, 2),
                        "index_build_s": round(index_s, 2),
                        "p50_ms": float(np.percentile(timings, 50)),
                        "p99_ms": float(np.percentile(timings, 99)),
                        "recall_at_1": recall,
                    }
                )
                print_latency(results[-1], flush=True)
        finally:
            await conn.close()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


async def _copy(conn: asyncpg.Connection, vectors: np.ndarray[Any, Any], offset: int) -> None:
    """``COPY`` the vectors in as entries, in binary (asyncpg's records; pgvector's binary
    ``vector`` is uint16 dimensions, uint16 zero, then big-endian float32s), 50,000 a chunk."""
    await conn.set_type_codec(
        "vector",
        schema="public",
        encoder=lambda v: struct.pack(">HH", len(v), 0) + np.asarray(v, ">f4").tobytes(),
        decoder=lambda b: np.frombuffer(b[4:], ">f4"),
        format="binary",
    )
    now = utcnow()
    later = now + timedelta(days=30)
    chunk = 50_000
    response = json.dumps({"choices": [{"message": {"content": "x"}}]})
    for start in range(0, len(vectors), chunk):
        records = [
            (
                f"{offset + start + j:032x}",
                "key:bench",
                "support",
                "small",
                1,
                SCOPE,
                f"{offset + start + j:064x}",
                "wordllama",
                256,
                v,
                f"q{offset + start + j}",
                "a",
                response,
                now,
                later,
            )
            for j, v in enumerate(vectors[start : start + chunk])
        ]
        await conn.copy_records_to_table("cache_entry", records=records, columns=_COPY_COLUMNS)


_COPY_COLUMNS = [
    "id",
    "namespace",
    "task_class",
    "model",
    "route_version",
    "scope",
    "key_hash",
    "embedder",
    "dim",
    "embedding",
    "query_text",
    "answer_text",
    "response",
    "created_at",
    "expires_at",
]


async def _time_store(
    kind: Any, url: str, probes: np.ndarray[Any, Any], lookups: int, exact: np.ndarray[Any, Any]
) -> tuple[list[float], float | None]:
    engine = make_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        store = kind(session_factory(engine))
        now = utcnow()
        for v in probes[:50]:
            await store.nearest(SCOPE, 256, v, now)
        timings: list[float] = []
        agree = 0
        for v in probes[50 : 50 + lookups]:
            began = time.perf_counter()
            found = await store.nearest(SCOPE, 256, v, now)
            timings.append((time.perf_counter() - began) * 1000)
            truth = int(np.argmax(exact @ v))
            agree += bool(found) and found[0].entry_id == f"{truth:032x}"
        return timings, agree / len(timings)
    finally:
        await engine.dispose()


async def sqlite_latency(
    size: int, base: np.ndarray[Any, Any], probes: np.ndarray[Any, Any], lookups: int
) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    vectors = synthetic(base, size, rng)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        await asyncio.to_thread(migrate.upgrade, url)
        engine = make_engine(url)
        try:
            store = MemoryStore(session_factory(engine), max_entries=size)
            now = utcnow()
            rows = [
                {
                    "id": f"{i:032x}",
                    "namespace": "key:bench",
                    "task_class": "support",
                    "model": "small",
                    "route_version": 1,
                    "scope": SCOPE,
                    "key_hash": f"{i:064x}",
                    "embedder": "wordllama",
                    "dim": 256,
                    "embedding": v,
                    "query_text": f"q{i}",
                    "answer_text": "a",
                    "response": {"choices": []},
                    "usage": None,
                    "min_similarity": None,
                    "created_at": now,
                    "expires_at": now + timedelta(days=30),
                }
                for i, v in enumerate(vectors)
            ]
            for start in range(0, size, 2000):
                await store.put(rows[start : start + 2000])
            for v in probes[:50]:
                await store.nearest(SCOPE, 256, v, now)
            timings = []
            for v in probes[50 : 50 + lookups]:
                began = time.perf_counter()
                await store.nearest(SCOPE, 256, v, now)
                timings.append((time.perf_counter() - began) * 1000)
        finally:
            await engine.dispose()
    result = {
        "store": "sqlite (in memory, exact)",
        "entries": size,
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
        "recall_at_1": 1.0,
    }
    print_latency(result, flush=True)
    return result


def print_latency(r: dict[str, Any], *, flush: bool = False) -> None:
    extra = (
        f"  (COPY {r['copy_s']:.1f} s, HNSW build {r['index_build_s']:.1f} s)"
        if "copy_s" in r
        else ""
    )
    print(
        f"  {r['store']:<28} {r['entries']:>9,}  p50 {r['p50_ms']:7.3f} ms  p99 "
        f"{r['p99_ms']:7.3f} ms  recall@1 {r['recall_at_1']:.3f}{extra}",
        flush=flush,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample-rate", type=float, default=0.2)
    parser.add_argument("--tick", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.01)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--million", action="store_true", help="also 10^6 entries on pgvector")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--draws",
        type=int,
        default=0,
        help="draw this many queries per set with replacement (a repeated question repeats "
        "its text) instead of each query once",
    )
    args = parser.parse_args()

    embedder = WordLlamaEmbedder()
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "rates": {}}
    all_vectors = []
    print("hit rate and false-hit rate (95% Wilson intervals); wordllama embeddings")
    for name in DATASETS:
        rows = load(name)
        random.Random(args.seed).shuffle(rows)
        if args.draws:
            draw = random.Random(args.seed)
            rows = [{**rows[draw.randrange(len(rows))], "draw": str(i)} for i in range(args.draws)]
        ids = [f"{r['id']}#{r.get('draw', 0)}" for r in rows]
        labels = [r["label"] for r in rows]
        began = time.perf_counter()
        vectors = embedder.embed_now([r["text"] for r in rows])
        embed_rate = len(rows) / (time.perf_counter() - began)
        all_vectors.append(vectors)
        runs = {
            "static 0.80": replay(
                ids,
                labels,
                vectors,
                threshold=0.80,
                guard=False,
                sample_rate=0,
                tick=args.tick,
                target=args.target,
            ),
            "static 0.92": replay(
                ids,
                labels,
                vectors,
                threshold=0.92,
                guard=False,
                sample_rate=0,
                tick=args.tick,
                target=args.target,
            ),
            "guard": replay(
                ids,
                labels,
                vectors,
                threshold=0.92,
                guard=True,
                sample_rate=args.sample_rate,
                tick=args.tick,
                target=args.target,
            ),
            "half cached 0.80": half_cached(labels, vectors, 0.80),
            "half cached 0.92": half_cached(labels, vectors, 0.92),
        }
        figures = {k: v.figures() for k, v in runs.items()}
        out["rates"][name] = {"queries": len(rows), "embeddings_per_s": embed_rate, **figures}
        print(
            f"\n{name}: {len(rows):,} queries{' drawn' if args.draws else ''}, "
            f"{len({*labels})} intents "
            f"({embed_rate:,.0f} embeddings/s)"
        )
        print(f"  {'':<18} {'hit rate':<24} {'false-hit rate':<24} threshold at end")
        for key, f in figures.items():
            end = "off" if f["threshold_end"] is None else f"{f['threshold_end']:.3f}"
            print(
                f"  {key:<18} {rate_cell(f, 'hit_rate', 'hit_ci'):<24} "
                f"{rate_cell(f, 'false_hit_rate', 'false_hit_ci'):<24} {end}"
            )
        g = figures["guard"]
        print(
            f"  guard: {g['graded']} hits graded ({args.sample_rate:.0%}), "
            f"{g['entry_bars']} entry bars raised, "
            f"{len(g['guard_events'])} threshold changes: "
            + ", ".join(
                f"{e['action']} {e['from']:.3f}->{'off' if e['to'] is None else round(e['to'], 3)}"
                for e in g["guard_events"]
            )
        )
    if not args.no_latency:
        base = np.vstack(all_vectors)
        probes = embedder.embed_now([r["text"] for r in load("banking77")])
        probes = probes[np.random.default_rng(3).permutation(len(probes))]
        print("\nlookup latency (nearest 4 of one scope)")
        sqlite = asyncio.run(sqlite_latency(10_000, base, probes, args.lookups))
        sizes = [10_000, 100_000] + ([1_000_000] if args.million else [])
        pg = asyncio.run(pg_latency(sizes, base, probes, args.lookups))
        ref = pg[0]["p50_ms"]
        for r in [sqlite, *pg]:
            r["p50_ratio_to_pgvector_1e4"] = r["p50_ms"] / ref
        print(
            "  p50 ratio to pgvector at 10^4: "
            + ", ".join(
                f"{r['store'].split()[0]} {r['entries']:,}: {r['p50_ratio_to_pgvector_1e4']:.2f}"
                for r in [sqlite, *pg]
            )
        )
        out["latency"] = [sqlite, *pg]
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
