"""Scale benchmark: the escalation job's run time and the quality endpoint's latency at 10^5,
10^6 and 10^7 stored decisions on PostgreSQL.

A scratch database (made at ``--pg``, dropped at the end, Alembic head through
``tierwise.migrate``, the default policy applied) is filled in steps with ``INSERT ... SELECT
FROM generate_series`` (one statement per chunk of at most 10^6 decisions, writing through
data-modifying CTEs a decision, its outcome, and for every 25th decision (4%) a graded sample):

- 12 task classes of the default policy with Zipf-like shares (the largest ~31%, the smallest
  ~1%), each on its tier's model;
- decision times spread evenly (a golden-ratio sequence, so not in insert order) over the
  ``--days`` (30) UTC days before now, into the day partitions (made first, as the partition
  job would have); every class's evidence window starts at the first of those days (its
  routing entry's ``changed_at``), so the job and the endpoint read the whole history: the
  worst case for a class that never changed;
- 1% of the grades disagree (below the default threshold of 3%, so no class moves and every
  run does the same work), 0.5% are without a verdict.

After each step (``ANALYZE`` first) it times, each the median of ``--repeat`` (5) runs after
one warm-up: the escalation job's run (``evaluator.escalation.run_escalation``: every class's
window counts, rule step and state write, one transaction) and ``GET
/v1/classes/{class}/quality`` for the largest class through the real app (``create_app`` with its
lifespan over httpx's ASGI transport). The job's settled-counts cache (``rule_state.counts``)
is dropped after each load, since the loaded grades are a backfill behind it; the warm-up
run, which then counts every class's whole window, is printed apart ("first run"). Each
figure is printed with its ratio to the 10^5 figure
measured in the same run, and the load's rate (decisions per second, with outcomes, samples and
grades).

Run: ``python bench/scale.py [--json PATH] [--pg URL] [--sizes 100000,1000000,10000000]``
(``df -h`` first: 10^7 decisions take about 6 GB with their outcomes and indexes).

``--json PATH`` writes ``{"bench": "scale", "environment": {...}, "steps": [{"decisions",
"grades", "load_s", "load_decisions_per_s", "escalation_first_ms", "escalation_ms",
"quality_ms", "quality_n_graded", "escalation_ratio", "quality_ratio", "first_ratio",
"db_bytes"}, ...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench._scratch import scratch_database  # noqa: E402
from evaluator.escalation import run_escalation  # noqa: E402
from evaluator.lifecycle import create_day_partition, day_partitions  # noqa: E402
from router.db import make_engine, session_factory  # noqa: E402
from router.policy import Policy, builtin_policy_path, parse_policy  # noqa: E402
from router.table import apply_policy  # noqa: E402
from tierwise import migrate  # noqa: E402
from tierwise.app import create_app  # noqa: E402
from tierwise.settings import Settings  # noqa: E402

CHUNK = 1_000_000
# (task type, input tokens, tools): one request shape per class of the default policy.
SHAPES = (
    ("classify", 40, False),
    ("extract_field", 200, False),
    ("summarize", 800, False),
    ("route_intent", 30, False),
    ("qa_retrieval", 1200, False),
    ("generate_reply", 600, False),
    ("classify", 2000, False),
    ("summarize", 4000, False),
    ("code_generation", 1500, False),
    ("compliance_check", 900, False),
    ("multi_step_reasoning", 2500, False),
    ("legal_review", 3000, False),
)


def class_mix(policy: Policy) -> list[tuple[str, str, str, str, str, float]]:
    """(task type, class, tier, model, provider, share) per shape; share ~ 1/rank (Zipf)."""
    weights = [1 / (i + 1) for i in range(len(SHAPES))]
    total = sum(weights)
    seen: dict[str, tuple[str, str, str, str, str, float]] = {}
    for (task_type, tokens, tools), w in zip(SHAPES, weights, strict=True):
        rule = policy.match(task_type, tokens, tools)
        model = policy.model_for_tier(rule.tier)
        provider = policy.prices[model].provider
        seen.setdefault(
            rule.task_class, (task_type, rule.task_class, rule.tier, model, provider, w / total)
        )
    return list(seen.values())


async def prepare(url: str, policy: Policy, start: datetime, days: int) -> str:
    """Apply the policy, register the classes, start their windows at ``start``, make the day
    partitions; the largest class's name."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    async with sessions() as session:
        await apply_policy(session, policy)
        await session.commit()
    mix = class_mix(policy)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "CREATE TABLE bench_slot (slot int PRIMARY KEY, task_type text, task_class text, "
                "tier text, model text, provider text)"
            )
        )
        slots: list[dict[str, Any]] = []
        for task_type, task_class, tier, model, provider, share in mix:
            for _ in range(round(share * 1000)):
                slots.append(
                    {
                        "slot": len(slots),
                        "task_type": task_type,
                        "task_class": task_class,
                        "tier": tier,
                        "model": model,
                        "provider": provider,
                    }
                )
        while len(slots) < 1000:  # rounding: the largest class takes the rest
            slots.append({**slots[0], "slot": len(slots)})
        await conn.execute(
            sa.text(
                "INSERT INTO bench_slot VALUES (:slot, :task_type, :task_class, :tier, :model, "
                ":provider)"
            ),
            slots[:1000],
        )
        await conn.execute(
            sa.text(
                "INSERT INTO task_class (name, first_routed_at) SELECT DISTINCT task_class, "
                "CAST(:start AS timestamptz) FROM bench_slot ON CONFLICT DO NOTHING"
            ),
            {"start": start},
        )
        await conn.execute(
            sa.text("UPDATE routing_entry SET changed_at = :start"), {"start": start}
        )
        for table in ("decision", "outcome"):
            have = await day_partitions(conn, table)
            for i in range(days + 1):
                day = (start + timedelta(days=i)).date()
                if day not in have:
                    key = "created_at" if table == "decision" else "decided_at"
                    await create_day_partition(conn, table, key, day)
    await engine.dispose()
    return mix[0][1]


LOAD = """
WITH g AS (
    SELECT n, s.*,
           CAST(:start AS timestamptz)
               + (n * 0.6180339887498949 - floor(n * 0.6180339887498949))
               * (:days * interval '1 day') AS at
    FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS n
    JOIN bench_slot s ON s.slot = (n * 7919) % 1000
), d AS (
    INSERT INTO decision (id, task_type, task_class, tier, model, provider, table_version,
                          sampled, input_tokens, has_tool_calls, shadow, created_at)
    SELECT 'd' || n, task_type, task_class, tier, model, provider, 1, n % 25 = 0,
           40 + n % 900, false, false, at
    FROM g
    RETURNING id, task_class, model, sampled, input_tokens, created_at
), o AS (
    INSERT INTO outcome (decision_id, task_class, served_model, status, latency_ms,
                         input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
                         reasoning_tokens, cost_nusd, decided_at, created_at)
    SELECT id, task_class, model, 'ok', 420.0, input_tokens, 0, 0, 60, 0,
           input_tokens * 150 + 60 * 600, created_at, created_at + interval '2 seconds'
    FROM d
), s AS (
    INSERT INTO sample (decision_id, task_class, model, input_messages, output_text, status,
                        attempts, earlier_input_tokens, earlier_output_tokens, decided_at,
                        created_at)
    SELECT id, task_class, model, CAST('[{"role": "user", "content": "q"}]' AS json), 'a',
           'graded', 1, 0, 0, created_at, created_at + interval '2 seconds'
    FROM d WHERE sampled
    RETURNING decision_id, task_class, model, decided_at
)
INSERT INTO grade (decision_id, task_class, model, reference_model, grader, verdict, score,
                   parse_status, raw_output, input_tokens, output_tokens, cost_nusd,
                   decided_at, created_at, shadow)
SELECT decision_id, task_class, model, 'claude-3-5-sonnet', 'judge_single',
       CASE WHEN hashtext(decision_id) % 200 IN (0, 1) THEN 'disagree'
            WHEN hashtext(decision_id) % 200 = 2 THEN 'invalid' ELSE 'agree' END,
       8.0, 'ok', '', 300, 20, 1500000, decided_at, decided_at + interval '1 minute', false
FROM s
"""


async def load(url: str, start: datetime, days: int, lo: int, hi: int) -> float:
    """Insert decisions ``lo`` .. ``hi - 1`` (with their rows in the other tables); seconds."""
    engine = make_engine(url)
    began = time.perf_counter()
    for a in range(lo, hi, CHUNK):
        b = min(a + CHUNK, hi)
        async with engine.begin() as conn:
            await conn.execute(sa.text(LOAD), {"start": start, "days": days, "lo": a, "hi": b})
        print(f"  loaded {b:,} decisions ({time.perf_counter() - began:.0f} s)", flush=True)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text("ANALYZE"))
    await engine.dispose()
    return time.perf_counter() - began


async def measure(url: str, task_class: str, repeat: int) -> dict[str, Any]:
    """Median escalation run and quality call (ms), after one warm-up of each."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    # The bulk load wrote grades with past created_at, behind the job's settled counts: a
    # backfill, which the cache cannot see. Drop the cache, so the first run counts the whole
    # window (timed apart: what a run after an upgrade or a backfill costs).
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE rule_state SET counts = NULL"))
    escalation: list[float] = []
    first = 0.0
    for i in range(repeat + 1):
        began = time.perf_counter()
        run = await run_escalation(sessions)
        took = (time.perf_counter() - began) * 1000
        assert not run.skipped and not (run.escalated or run.returned), run.summary()
        if i:
            escalation.append(took)
        else:
            first = took
    async with engine.connect() as conn:
        grades = (await conn.execute(sa.text("SELECT count(*) FROM grade"))).scalar_one()
        size = await conn.execute(sa.text("SELECT pg_database_size(current_database())"))
        db_bytes = size.scalar_one()
    await engine.dispose()
    app = create_app(Settings(database_url=url, run_scheduler=False))
    quality: list[float] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tierwise") as client:
            for i in range(repeat + 1):
                began = time.perf_counter()
                resp = await client.get(f"/v1/classes/{task_class}/quality")
                took = (time.perf_counter() - began) * 1000
                resp.raise_for_status()
                if i:
                    quality.append(took)
            body = resp.json()
    return {
        "grades": int(grades),
        "escalation_first_ms": first,
        "escalation_ms": statistics.median(escalation),
        "quality_ms": statistics.median(quality),
        "quality_n_graded": body["n_graded"],
        "db_bytes": int(db_bytes),
    }


async def run(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    migrate.upgrade(url)
    policy = parse_policy(builtin_policy_path("default").read_text(encoding="utf-8"))
    now = datetime.now(UTC)
    start = (now - timedelta(days=args.days)).replace(hour=0, minute=0, second=0, microsecond=0)
    largest = await prepare(url, policy, start, args.days)
    steps: list[dict[str, Any]] = []
    loaded = 0
    for size in args.sizes:
        print(f"loading to {size:,} decisions", flush=True)
        took = await load(url, start, args.days, loaded, size)
        added, loaded = size - loaded, size
        figures = await measure(url, largest, args.repeat)
        base = steps[0] if steps else figures
        steps.append(
            {
                "decisions": size,
                "load_s": took,
                "load_decisions_per_s": added / took,
                **figures,
                "escalation_ratio": figures["escalation_ms"] / base["escalation_ms"],
                "quality_ratio": figures["quality_ms"] / base["quality_ms"],
                "first_ratio": figures["escalation_first_ms"] / base["escalation_first_ms"],
            }
        )
        s = steps[-1]
        print(
            f"  {size:>11,} decisions {s['grades']:>9,} grades: escalation "
            f"{s['escalation_ms']:8.1f} ms (x{s['escalation_ratio']:.2f}), quality "
            f"{s['quality_ms']:7.1f} ms (x{s['quality_ratio']:.2f}); load {took:.0f} s "
            f"({s['load_decisions_per_s']:,.0f}/s); db {s['db_bytes'] / 2**30:.2f} GiB",
            flush=True,
        )
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin URL of the PostgreSQL server (a scratch database is made and dropped)",
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100_000, 1_000_000, 10_000_000],
        help="stored decisions at each step, ascending (comma-separated)",
    )
    parser.add_argument("--days", type=int, default=30, help="UTC days the decisions span")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure")
    args = parser.parse_args()
    if args.sizes != sorted(args.sizes):
        parser.error("--sizes: ascending sizes")
    with scratch_database(args.pg, "tierwise_scale") as url:
        steps = asyncio.run(run(args, url))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; ratios against 10^5")
    print(
        f"{'decisions':>11} {'grades':>9} {'escalation ms':>14} {'x':>6} "
        f"{'quality ms':>11} {'x':>6} {'first run ms':>13} {'x':>6}"
    )
    for s in steps:
        print(
            f"{s['decisions']:>11,} {s['grades']:>9,} {s['escalation_ms']:>14.1f} "
            f"{s['escalation_ratio']:>6.2f} {s['quality_ms']:>11.1f} {s['quality_ratio']:>6.2f} "
            f"{s['escalation_first_ms']:>13.1f} {s['first_ratio']:>6.2f}"
        )
    if args.json:
        figures = {
            "bench": "scale",
            "environment": {
                "python": sys.version.split()[0],
                "cpu_count": os.cpu_count(),
                "options": vars(args),
            },
            "steps": steps,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
