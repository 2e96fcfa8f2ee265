"""Routing-decision benchmark: the in-process decision function and POST /v1/route over HTTP.

Prints decisions per second and p50/p99 latency for
  1. ``router.decide.decide`` on an in-memory snapshot (pure decision),
  2. ``Router.route`` (decision + id + buffering for the batch writer),
  3. ``POST /v1/route`` over loopback HTTP to ``tierwise serve`` in its own process (one
     keep-alive connection, and 8 concurrent ones), with ``GET /healthz`` on the same server as
     the HTTP baseline,
so the cost of the decision is shown as a ratio against the framework's own floor.

Run: ``python bench/route.py`` (SQLite in a temp dir, default policy; about 30 s on 2 cores).

``--json PATH`` also writes the printed figures as one JSON object (rates per second, latencies
in microseconds)::

    {"bench": "route",
     "environment": {"python": "3.12.3", "cpu_count": 2, "policy": "default",
                     "request_shapes": 5, "options": {"json": PATH}},
     "in_process": {"decide": FIGURES, "router_route": FIGURES,
                    "decisions_flushed": int, "decide_mean_us": float},
     "http": {"1_conn": {"healthz": FIGURES, "route": FIGURES, "ratio_route_vs_healthz": float},
              "8_conn": {...the same...}}}

where FIGURES is ``{"calls": int, "rate_per_s": float, "p50_us": float, "p99_us": float}``;
``healthz`` is the HTTP baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.db import make_engine, session_factory  # noqa: E402
from router.decide import decide  # noqa: E402
from router.policy import builtin_policy_path, load_policy  # noqa: E402
from router.service import Router  # noqa: E402
from router.table import apply_policy, load_snapshot  # noqa: E402
from tierwise import migrate  # noqa: E402

REQUESTS = [
    ("classify", 120, False),
    ("summarize", 1500, False),
    ("code_generation", 4000, True),
    ("legal_review", 800, False),
    ("unknown_task", 50, False),
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, latencies_ns: list[float], wall_s: float) -> dict[str, Any]:
    rate = len(latencies_ns) / wall_s
    p50 = pct(latencies_ns, 0.50) / 1000
    p99 = pct(latencies_ns, 0.99) / 1000
    print(f"{name:<44} {rate:>12,.0f}/s   p50 {p50:>9.2f} us   p99 {p99:>9.2f} us")
    return {"calls": len(latencies_ns), "rate_per_s": rate, "p50_us": p50, "p99_us": p99}


def timed_sync(fn: Callable[[int], object], n: int) -> tuple[list[float], float]:
    lat: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        lat.append(time.perf_counter_ns() - t0)
    return lat, time.perf_counter() - start


async def timed_async(
    fn: Callable[[int], Awaitable[object]], n: int, workers: int
) -> tuple[list[float], float]:
    lat: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter_ns()
            await fn(i)
            lat.append(time.perf_counter_ns() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return lat, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def prepare(url: str) -> None:
    engine = make_engine(url)
    async with session_factory(engine)() as session:
        await apply_policy(session, load_policy(builtin_policy_path("default")))
        await session.commit()
    await engine.dispose()


async def in_process(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    sessions = session_factory(engine)
    async with sessions() as session:
        snapshot = await load_snapshot(session)
    assert snapshot is not None
    n = 200_000
    ids = [f"{i:032x}" for i in range(n)]
    lat, wall = timed_sync(lambda i: decide(snapshot, *REQUESTS[i % len(REQUESTS)], ids[i]), n)
    figures: dict[str, Any] = {"decide": report("decide() on the snapshot", lat, wall)}
    router = Router(sessions, flush_size=10**9)
    await router.refresh(force=True)
    lat, wall = timed_sync(lambda i: router.route(*REQUESTS[i % len(REQUESTS)], None), n)
    figures["router_route"] = report("Router.route() (+ uuid, buffered write)", lat, wall)
    written = await router.flush()
    print(f"{'  batch writer: decisions flushed':<44} {written:>12,}")
    figures["decisions_flushed"] = written
    await engine.dispose()
    return figures


async def over_http(port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    n = 3000
    figures: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def health(_i: int) -> object:
            return (await client.get("/healthz")).raise_for_status()

        async def route(i: int) -> object:
            task_type, tokens, tools = REQUESTS[i % len(REQUESTS)]
            return (
                await client.post(
                    "/v1/route",
                    json={
                        "task_type": task_type,
                        "input_tokens": tokens,
                        "has_tool_calls": tools,
                    },
                )
            ).raise_for_status()

        for _ in range(200):  # warm up
            await route(0)
        for workers in (1, 8):
            lat, wall = await timed_async(health, n, workers)
            floor = report(f"GET /healthz (HTTP floor), {workers} conn", lat, wall)
            lat, wall = await timed_async(route, n, workers)
            got = report(f"POST /v1/route, {workers} conn", lat, wall)
            ratio = got["rate_per_s"] / floor["rate_per_s"]
            print(f"{'  ratio route / healthz':<44} {ratio:>12.2f}")
            figures[f"{workers}_conn"] = {
                "healthz": floor,
                "route": got,
                "ratio_route_vs_healthz": ratio,
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    migrate.upgrade(url)
    asyncio.run(prepare(url))
    print(f"python {sys.version.split()[0]}, policy 'default', {len(REQUESTS)} request shapes")
    figures: dict[str, Any] = {
        "bench": "route",
        "environment": {
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
            "policy": "default",
            "request_shapes": len(REQUESTS),
            "options": vars(args),
        },
        "in_process": asyncio.run(in_process(url)),
    }

    # The server runs in its own process, as deployed: the client must not share its GIL.
    port = free_port()
    env = {
        **os.environ,
        "TIERWISE_DATABASE_URL": url,
        "TIERWISE_RUN_SCHEDULER": "false",
        "TIERWISE_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tierwise.cli", "serve", "--port", str(port)], env=env, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start") from None
                time.sleep(0.1)
        figures["http"] = asyncio.run(over_http(port))
    finally:
        server.terminate()
        server.wait(timeout=10)
    mean_us = 1e6 / figures["in_process"]["decide"]["rate_per_s"]
    print(f"{'decide() per call (mean)':<44} {mean_us:>12.2f} us")
    figures["in_process"]["decide_mean_us"] = mean_us
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
