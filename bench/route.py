"""Routing-decision benchmark: the in-process decision function and POST /v1/route over HTTP.

Prints decisions per second and p50/p99 latency for
  1. ``router.decide.decide`` on an in-memory snapshot (pure decision),
  2. ``Router.route`` (decision + id + buffering for the batch writer),
  3. ``POST /v1/route`` over loopback HTTP to ``tierwise serve`` in its own process (one
     keep-alive connection, and 8 concurrent ones), with ``GET /healthz`` on the same server as
     the HTTP baseline,
so the cost of the decision is shown as a ratio against the framework's own floor.

Run: ``python bench/route.py`` (SQLite in a temp dir, default policy; about 30 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

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


def report(name: str, latencies_ns: list[float], wall_s: float) -> float:
    rate = len(latencies_ns) / wall_s
    p50 = pct(latencies_ns, 0.50) / 1000
    p99 = pct(latencies_ns, 0.99) / 1000
    print(f"{name:<44} {rate:>12,.0f}/s   p50 {p50:>9.2f} us   p99 {p99:>9.2f} us")
    return rate


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


async def in_process(url: str) -> float:
    engine = make_engine(url)
    sessions = session_factory(engine)
    async with sessions() as session:
        snapshot = await load_snapshot(session)
    assert snapshot is not None
    n = 200_000
    ids = [f"{i:032x}" for i in range(n)]
    lat, wall = timed_sync(lambda i: decide(snapshot, *REQUESTS[i % len(REQUESTS)], ids[i]), n)
    rate = report("decide() on the snapshot", lat, wall)
    router = Router(sessions, flush_size=10**9)
    await router.refresh(force=True)
    lat, wall = timed_sync(lambda i: router.route(*REQUESTS[i % len(REQUESTS)], None), n)
    report("Router.route() (+ uuid, buffered write)", lat, wall)
    written = await router.flush()
    print(f"{'  batch writer: decisions flushed':<44} {written:>12,}")
    await engine.dispose()
    return rate


async def over_http(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    n = 3000
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
            base_rate = report(f"GET /healthz (HTTP floor), {workers} conn", lat, wall)
            lat, wall = await timed_async(route, n, workers)
            rate = report(f"POST /v1/route, {workers} conn", lat, wall)
            print(f"{'  ratio route / healthz':<44} {rate / base_rate:>12.2f}")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    migrate.upgrade(url)
    asyncio.run(prepare(url))
    print(f"python {sys.version.split()[0]}, policy 'default', {len(REQUESTS)} request shapes")
    decide_rate = asyncio.run(in_process(url))

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
        asyncio.run(over_http(port))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"{'decide() per call (mean)':<44} {1e6 / decide_rate:>12.2f} us")


if __name__ == "__main__":
    main()
