"""Ingest benchmark: outcomes per second through ``POST /v1/outcomes``, and grading-budget
reservations per second.

For each backend (SQLite in a temporary file; PostgreSQL in a database this bench creates at
``--pg`` and drops at the end; both at Alembic head through ``tierwise.migrate``) it seeds N
unsampled decisions with SQLAlchemy Core, then times:

- ``POST /v1/outcomes`` with one outcome a request and with 1,000 a request, through the real app
  (``tierwise.app.create_app`` with its lifespan, over httpx's ASGI transport: HTTP parsing,
  validation, pricing and the repository's transaction, without a socket);
- the baseline, measured in the same run: a bare SQLAlchemy Core ``executemany`` insert of the
  same outcome rows (already priced, 1,000 a transaction) into the same table; each ratio is
  rate / baseline rate;
- budget reservations: 8 asyncio tasks, each with its own session (own connection), reserving
  and settling against one global + one class budget (``GradingBudget.reserve`` / ``settle``:
  two conditional UPDATEs in one transaction each way) until N reservations are done.

Run: ``python bench/ingest.py [--json PATH] [--pg URL] [--outcomes N]``.

``--json PATH`` writes ``{"bench": "ingest", "environment": {...}, "runs": [{"backend",
"what", "rows", "seconds", "rows_per_s", "ratio_vs_baseline"}, ...]}``, one run per printed row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench._scratch import scratch_database  # noqa: E402
from evaluator.grading._budget import GradingBudget  # noqa: E402
from router.db import make_engine, session_factory, utcnow  # noqa: E402
from router.models import Decision, Outcome  # noqa: E402
from router.policy import builtin_policy_path, parse_policy  # noqa: E402
from router.table import apply_policy  # noqa: E402
from tierwise import migrate  # noqa: E402
from tierwise.app import create_app  # noqa: E402
from tierwise.settings import Settings  # noqa: E402

USAGE = {"prompt_tokens": 420, "completion_tokens": 60}
MODEL = "gpt-4o-mini"


def decisions(prefix: str, n: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "id": f"{prefix}-{i:08d}",
            "task_type": "classify",
            "task_class": "classify",
            "tier": "trivial",
            "model": MODEL,
            "provider": "openai",
            "table_version": 1,
            "sampled": False,
            "input_tokens": 420,
            "has_tool_calls": False,
            "shadow": False,
            "created_at": now,
        }
        for i in range(n)
    ]


async def seed(url: str, prefix: str, n: int) -> list[str]:
    engine = make_engine(url)
    rows = decisions(prefix, n)
    async with engine.begin() as conn:
        await conn.execute(sa.insert(Decision.__table__), rows)  # type: ignore[attr-defined]
    await engine.dispose()
    return [r["id"] for r in rows]


async def baseline(url: str, ids: list[str]) -> float:
    """Seconds for a bare Core executemany insert of ``ids``' outcomes, 1,000 a transaction."""
    engine = make_engine(url)
    now = utcnow()
    rows = [
        {
            "decision_id": d,
            "task_class": "classify",
            "served_model": MODEL,
            "status": "ok",
            "latency_ms": 120.0,
            "input_tokens": 420,
            "cached_input_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 60,
            "reasoning_tokens": 0,
            "cost_usd": 0.000099,
            "usage_raw": USAGE,
            "created_at": now,
        }
        for d in ids
    ]
    table = Outcome.__table__  # type: ignore[attr-defined]
    start = time.perf_counter()
    for i in range(0, len(rows), 1000):
        async with engine.begin() as conn:
            await conn.execute(sa.insert(table), rows[i : i + 1000])
    took = time.perf_counter() - start
    await engine.dispose()
    return took


def body(d: str) -> dict[str, Any]:
    return {"decision_id": d, "served_model": MODEL, "latency_ms": 120.0, "usage": USAGE}


async def through_api(url: str, ids: list[str], per_request: int) -> float:
    """Seconds to post ``ids``' outcomes ``per_request`` a request (8 in flight for single)."""
    settings = Settings(database_url=url, run_scheduler=False, datasets_dir=ROOT / "datasets")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tierwise") as client:
            chunks = [ids[i : i + per_request] for i in range(0, len(ids), per_request)]
            queue = iter(chunks)

            async def worker() -> None:
                for chunk in queue:
                    payload: Any = body(chunk[0]) if per_request == 1 else [body(d) for d in chunk]
                    got = (await client.post("/v1/outcomes", json=payload)).raise_for_status()
                    assert got.json()["stored"] == len(chunk), got.text

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(8 if per_request == 1 else 1)))
            return time.perf_counter() - start


async def reservations(url: str, n: int, workers: int = 8) -> float:
    """Seconds for ``n`` reserve+settle pairs by ``workers`` tasks, each its own session."""
    engine = make_engine(url, echo=False)
    sessions = session_factory(engine)
    body_ = builtin_policy_path("default").read_text(encoding="utf-8")
    policy = parse_policy(
        "grading_budget_usd_per_day = 1000.0\n"
        + body_
        + '\n[[classes]]\nmatch = "classify"\ngrading_budget_usd_per_day = 1000.0\n'
    )
    budget = GradingBudget(sessions, policy)
    left = iter(range(n))

    async def worker() -> None:
        for _ in left:
            got = await budget.reserve("classify", 1000)
            await budget.settle(got, 900)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    took = time.perf_counter() - start
    await engine.dispose()
    return took


async def prepare(url: str) -> None:
    engine = make_engine(url)
    async with session_factory(engine)() as session:
        await apply_policy(session, parse_policy(builtin_policy_path("default").read_text()))
        await session.commit()
    await engine.dispose()


def run_backend(name: str, url: str, n: int) -> list[dict[str, Any]]:
    migrate.upgrade(url)
    asyncio.run(prepare(url))
    runs: list[dict[str, Any]] = []
    base_ids = asyncio.run(seed(url, "base", n))
    base_s = asyncio.run(baseline(url, base_ids))
    base_rate = n / base_s
    runs.append(
        {
            "backend": name,
            "what": "baseline: Core executemany insert",
            "rows": n,
            "seconds": base_s,
            "rows_per_s": base_rate,
            "ratio_vs_baseline": 1.0,
        }
    )
    for per in (1, 1000):
        rows = min(n, 4000) if per == 1 else n
        ids = asyncio.run(seed(url, f"api{per}", rows))
        took = asyncio.run(through_api(url, ids, per))
        runs.append(
            {
                "backend": name,
                "what": f"POST /v1/outcomes, {per} per request",
                "rows": rows,
                "seconds": took,
                "rows_per_s": rows / took,
                "ratio_vs_baseline": rows / took / base_rate,
            }
        )
    m = 2000
    took = asyncio.run(reservations(url, m))
    runs.append(
        {
            "backend": name,
            "what": "budget reserve+settle, 8 workers",
            "rows": m,
            "seconds": took,
            "rows_per_s": m / took,
            "ratio_vs_baseline": None,
        }
    )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin URL of the PostgreSQL server (a bench database is made)",
    )
    parser.add_argument("--outcomes", type=int, default=20_000, help="rows per batched run")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp())
    runs += run_backend("sqlite", f"sqlite+aiosqlite:///{tmp / 'bench.db'}", args.outcomes)
    with scratch_database(args.pg, "tierwise_bench") as url:
        runs += run_backend("postgresql", url, args.outcomes)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    print(f"{'backend':<11} {'what':<40} {'rows':>7} {'s':>8} {'rows/s':>10} {'vs base':>8}")
    for r in runs:
        ratio = "" if r["ratio_vs_baseline"] is None else f"{r['ratio_vs_baseline']:.3f}"
        print(
            f"{r['backend']:<11} {r['what']:<40} {r['rows']:>7,} {r['seconds']:>8.2f} "
            f"{r['rows_per_s']:>10,.0f} {ratio:>8}"
        )
    if args.json:
        figures = {
            "bench": "ingest",
            "environment": {
                "python": sys.version.split()[0],
                "cpu_count": os.cpu_count(),
                "options": vars(args),
            },
            "runs": runs,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
