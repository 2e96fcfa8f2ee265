"""Grading benchmark: grades per second through the full grading job.

Each run queues N samples in a fresh SQLite database at Alembic head (``tierwise.migrate``),
then times ``evaluator.grading.grade_pending`` grading all of them with the MT-Bench judge
(``judge_single``) through a real provider adapter and its SDK, against the loopback wire
server of the tests (``python -m tests.wire``: uvicorn + Starlette on 127.0.0.1, in its own
process so the judge's CPU is not charged to the grading job). The judge answers
"Rating: [[8]]" with the cached-prompt usage after an injected delay (0 ms: the cost of job, SDK,
HTTP and database; 200 ms: a judge's latency, where concurrency pays). Each configuration runs
at the configured concurrency (``Settings``: ``grading_concurrency`` for the job,
``openai_concurrency`` / ``anthropic_concurrency`` for the adapter; the smaller one binds) and at
concurrency 1 as the baseline; the ratio is printed. Every run checks that all N samples were
graded ``agree`` and that the booked cost is N x the cached-prompt cost.

Run: ``python bench/grading.py`` (under a minute on 2 cores).

``--json PATH`` also writes the printed figures as one JSON object, one ``runs`` entry per
printed row in the same order (the concurrency-1 run of each api and latency is the baseline)::

    {"bench": "grading",
     "environment": {"python": "3.12.3", "cpu_count": 2,
                     "options": {"apis": [...], "samples": 600, "slow_samples": 96,
                                 "latency_ms": 200, "json": PATH},
                     "settings": {"grading_concurrency": int, "openai_concurrency": int,
                                  "anthropic_concurrency": int}},
     "runs": [{"api": "openai", "judge_latency_ms": 0, "samples": 600, "concurrency": 8,
               "seconds": float, "grades_per_s": float, "ratio_vs_c1": float}, ...]}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from evaluator.datasets import load_judge_prompts  # noqa: E402
from evaluator.graders import GraderEnv  # noqa: E402
from evaluator.grading import grade_pending  # noqa: E402
from router.db import make_engine, session_factory, utcnow  # noqa: E402
from router.models import Decision, Sample  # noqa: E402
from router.policy import builtin_policy_path, parse_policy  # noqa: E402
from router.providers import AnthropicProvider, OpenAIProvider, Provider  # noqa: E402
from router.table import apply_policy  # noqa: E402
from tierwise import migrate  # noqa: E402
from tierwise.settings import Settings  # noqa: E402

POLICY_OVERRIDE = """
[[classes]]
match = "bench_openai"
reference_model = "gpt-4o"
"""
# Cached prompt tokens: 86 x 2.50 + 1920 x 1.25 + 300 x 10 per million at gpt-4o; the same
# tokens in Anthropic's shape at claude-3-5-sonnet: 86 x 3.00 + 1920 x 0.30 + 300 x 15.
COST_PER_CALL = {"openai": 0.005615, "anthropic": 0.005334}


@dataclass(frozen=True)
class Result:
    api: str
    latency_ms: int
    samples: int
    concurrency: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


async def seed(url: str, api: str, n: int) -> None:
    """Apply the default policy (+ gpt-4o as the OpenAI class's reference) and queue n samples."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    body = builtin_policy_path("default").read_text(encoding="utf-8") + POLICY_OVERRIDE
    task_class = f"bench_{api}"
    async with sessions() as session:
        await apply_policy(session, parse_policy(body))
        now = utcnow()
        session.add_all(
            Decision(
                id=f"d{i:06d}",
                task_type=task_class,
                task_class=task_class,
                tier="standard",
                model="gpt-4o-mini",
                provider="openai",
                table_version=1,
                sampled=True,
                input_tokens=20,
                has_tool_calls=False,
                created_at=now,
            )
            for i in range(n)
        )
        await session.flush()
        session.add_all(
            Sample(
                decision_id=f"d{i:06d}",
                task_class=task_class,
                model="gpt-4o-mini",
                input_messages=[{"role": "user", "content": f"Summarise item {i}: ..."}],
                output_text=f"A summary of item {i}.",
                meta={},
                decided_at=now,
            )
            for i in range(n)
        )
        await session.commit()
    await engine.dispose()


@contextmanager
def judge_server(latency_ms: int) -> Iterator[str]:
    """Start ``python -m tests.wire`` with ``latency_ms``; yield its base URL; stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.wire", "--latency-ms", str(latency_ms)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if line[:1] != ["port"]:
            raise SystemExit(f"judge server did not start: {line}")
        yield f"http://127.0.0.1:{line[1]}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=10)


def make_provider(api: str, url: str, concurrency: int, settings: Settings) -> Provider:
    if api == "openai":
        return OpenAIProvider(
            api_key=SecretStr("bench"),
            base_url=f"{url}/v1",
            concurrency=concurrency,
            max_retries=settings.provider_max_retries,
            timeout_s=settings.provider_timeout_s,
            budget_s=settings.grading_budget_s,
        )
    return AnthropicProvider(
        api_key=SecretStr("bench"),
        base_url=url,
        concurrency=concurrency,
        max_retries=settings.provider_max_retries,
        timeout_s=settings.provider_timeout_s,
        budget_s=settings.grading_budget_s,
    )


async def grade_all(
    db_url: str, api: str, n: int, judge_url: str, concurrency: int, settings: Settings
) -> float:
    """Seconds ``grade_pending`` takes to grade the n queued samples."""
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    provider = make_provider(api, judge_url, concurrency, settings)
    env = GraderEnv(provider_for=lambda _m: provider, items={}, judge_prompts=load_judge_prompts())
    try:
        started = time.perf_counter()
        run = await grade_pending(
            sessions,
            env,
            batch_size=settings.grading_batch_size,
            concurrency=concurrency,
            lease_s=settings.grading_lease_s,
        )
        seconds = time.perf_counter() - started
    finally:
        await provider.aclose()
        await engine.dispose()
    want = n * COST_PER_CALL[api]
    if run.graded != n or run.verdicts != {"agree": n} or abs(run.cost_usd - want) > 1e-9:
        raise SystemExit(f"bad run: graded {run.graded}/{n} {run.verdicts} ${run.cost_usd}")
    return seconds


def one_run(
    tmp: Path,
    judge_url: str,
    api: str,
    latency_ms: int,
    n: int,
    concurrency: int,
    settings: Settings,
) -> Result:
    path = tmp / f"{api}-{latency_ms}-{concurrency}-{time.monotonic_ns()}.db"
    db_url = f"sqlite+aiosqlite:///{path}"
    migrate.upgrade(db_url)  # synchronous: outside any event loop
    asyncio.run(seed(db_url, api, n))
    seconds = asyncio.run(grade_all(db_url, api, n, judge_url, concurrency, settings))
    return Result(api, latency_ms, n, concurrency, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--apis", nargs="+", default=["openai", "anthropic"], choices=["openai", "anthropic"]
    )
    parser.add_argument("--samples", type=int, default=600, help="samples per 0 ms run")
    parser.add_argument("--slow-samples", type=int, default=96, help="samples per 200 ms run")
    parser.add_argument("--latency-ms", type=int, default=200, help="injected judge latency")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = Settings()
    print(
        "tierwise grading benchmark: evaluator.grading.grade_pending, judge_single, SQLite at "
        "Alembic head;\njudge = loopback wire server (python -m tests.wire, own process) via "
        "the openai / anthropic SDKs"
    )
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; configured "
        f"grading_concurrency={settings.grading_concurrency}, "
        f"openai_concurrency={settings.openai_concurrency}, "
        f"anthropic_concurrency={settings.anthropic_concurrency}"
    )
    print()
    figures: dict[str, Any] = {
        "bench": "grading",
        "environment": {
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
            "options": vars(args),
            "settings": {
                "grading_concurrency": settings.grading_concurrency,
                "openai_concurrency": settings.openai_concurrency,
                "anthropic_concurrency": settings.anthropic_concurrency,
            },
        },
        "runs": [],
    }
    header = (
        f"{'api':<10} {'judge latency':>13} {'samples':>8} {'concurrency':>12} "
        f"{'seconds':>8} {'grades/s':>9} {'vs c=1':>7}"
    )
    print(header)
    print("-" * len(header))
    results: dict[tuple[str, int], list[Result]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for latency_ms, n in ((0, args.samples), (args.latency_ms, args.slow_samples)):
            with judge_server(latency_ms) as judge_url:
                for api in args.apis:
                    configured = min(
                        settings.grading_concurrency, int(getattr(settings, f"{api}_concurrency"))
                    )
                    if latency_ms == 0:
                        one_run(tmp, judge_url, api, 0, 16, configured, settings)  # warm-up
                    results[api, latency_ms] = [
                        one_run(tmp, judge_url, api, latency_ms, n, c, settings)
                        for c in (configured, 1)
                    ]
    for api in args.apis:
        for latency_ms in (0, args.latency_ms):
            runs = results[api, latency_ms]
            base = runs[-1]
            for r in runs:
                ratio = f"{r.rate / base.rate:.1f}x"
                print(
                    f"{r.api:<10} {r.latency_ms:>10} ms {r.samples:>8} {r.concurrency:>12} "
                    f"{r.seconds:>8.2f} {r.rate:>9.1f} {ratio:>7}"
                )
                figures["runs"].append(
                    {
                        "api": r.api,
                        "judge_latency_ms": r.latency_ms,
                        "samples": r.samples,
                        "concurrency": r.concurrency,
                        "seconds": r.seconds,
                        "grades_per_s": r.rate,
                        "ratio_vs_c1": r.rate / base.rate,
                    }
                )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
