"""Routing-decision benchmark: the decision in process, and POST /v1/route against a bare endpoint.

Prints decisions per second and p50/p99 latency for
  1. ``router.decide.decide`` on an in-memory snapshot (pure decision),
  2. ``Router.route`` (decision + id + buffering for the batch writer),
  3. ``POST /v1/route`` on ``tierwise serve`` (SQLite, or PostgreSQL with ``--pg``; every
     decision written by the batch writer) against the baseline, a bare FastAPI endpoint
     that validates the same body (``RouteRequest``) and returns a constant, served by
     uvicorn with the same options (httptools, uvloop, no access log), each in its own
     process, both driven by Debian's ``wrk`` (``apt-get install -y wrk``) with the same
     POST body, at 1 and 32 connections,
     in alternating rounds: the ratio route / bare is the median of the rounds' ratios. The
     servers' CPU per request (``/proc/<pid>/stat``, all threads) is printed too: on a shared
     machine it is steadier than requests per second.
After the run the servers stop and the decisions are counted: the rows stored must equal the
decisions the server counted (``tierwise_decisions_total`` on its ``/metrics``) and be at
least the 2xx answers wrk counted, and neither server may answer a non-2xx; else the bench
fails.

Run: ``python bench/route.py [--rounds 5] [--duration 3] [--pg ADMIN_URL]`` (about a minute on
2 cores; SQLite, the embedded default, unless ``--pg`` names a PostgreSQL server, where a scratch
database is made and dropped).

``--json PATH`` also writes the printed figures as one JSON object (rates per second, latencies
in microseconds)::

    {"bench": "route",
     "environment": {"python", "cpu_count", "policy", "request_shapes", "load_average",
                     "options"},
     "in_process": {"decide": FIGURES, "router_route": FIGURES,
                    "decisions_flushed": int, "decide_mean_us": float},
     "http": {"1_conn": {"bare": SIDE, "route": SIDE, "ratio_route_vs_bare": float,
                         "ratios": [float], "cpu_ratio_bare_vs_route": float},
              "32_conn": {...the same...},
              "decisions": {"answered": int, "made": int, "stored": int}}}

where FIGURES is ``{"calls", "rate_per_s", "p50_us", "p99_us"}`` and SIDE is the medians over
the rounds ``{"rate_per_s", "p50_us", "p99_us", "server_cpu_us_per_request", "runs": [RUN]}``,
RUN one wrk run's ``{"requests", "rate_per_s", "p50_us", "p99_us", "non_2xx",
"socket_errors", "server_cpu_us_per_request"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._scratch import scratch_database  # noqa: E402
from router.db import make_engine, session_factory  # noqa: E402
from router.decide import decide  # noqa: E402
from router.policy import builtin_policy_path, load_policy  # noqa: E402
from router.schemas import RouteRequest  # noqa: E402
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


WRK_LUA = """\
wrk.method = "POST"
wrk.body = '{"task_type": "classify", "input_tokens": 120, "has_tool_calls": false}'
wrk.headers["Content-Type"] = "application/json"
"""

UVICORN_OPTIONS: dict[str, Any] = {
    "log_level": "warning",
    "access_log": False,
    "log_config": None,
    "http": "httptools",
    "loop": "uvloop",
}
"""What ``tierwise serve`` passes uvicorn (tierwise/cli/serve.py), given to the bare app too."""


def bare_app() -> Any:
    """The baseline: a bare FastAPI endpoint that validates the same body as ``POST /v1/route``
    (``router.schemas.RouteRequest``) and returns a constant."""
    from fastapi import FastAPI

    app = FastAPI()

    # RouteRequest is imported at module level: under `from __future__ import annotations` the
    # annotation is a string FastAPI resolves in this module's globals (a name local to this
    # function made `body` a query parameter, and every call a 422).
    @app.post("/v1/route")
    async def route(body: RouteRequest) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(), host="127.0.0.1", port=port, **UVICORN_OPTIONS)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's ``--latency`` report: requests, requests/s, p50 and p99 latency (us), non-2xx."""
    import re

    def latency(q: str) -> float:
        m = re.search(rf"^\s*{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m is None:
            raise RuntimeError(f"no {q}% line in wrk's output:\n{text}")
        return float(m[1]) * _UNITS[m[2]]

    requests = re.search(r"(\d+) requests in", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if requests is None or rate is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: .*", text)
    return {
        "requests": int(requests[1]),
        "rate_per_s": float(rate[1]),
        "p50_us": latency("50"),
        "p99_us": latency("99"),
        "non_2xx": int(bad[1]) if bad else 0,
        "socket_errors": errors[0] if errors else "",
    }


def run_wrk(port: int, conns: int, duration_s: int, lua: Path, pid: int) -> dict[str, Any]:
    """One wrk run against ``POST /v1/route`` on ``port``; adds the server's CPU per request."""
    before = cpu_s(pid)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{duration_s}s",
            "--latency",
            "-s",
            str(lua),
            f"http://127.0.0.1:{port}/v1/route",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, Any] = parse_wrk(out)
    figures["server_cpu_us_per_request"] = (cpu_s(pid) - before) * 1e6 / figures["requests"]
    return figures


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def over_http(
    ports: dict[str, int], pids: dict[str, int], *, rounds: int, duration_s: int, tmp: Path
) -> dict[str, Any]:
    """Both servers driven by wrk in turns (bare, route, route, bare, ...: the order flips each
    round so a drift in the machine's load hits both alike), at 1 and 32 connections."""
    lua = tmp / "route.lua"
    lua.write_text(WRK_LUA, encoding="utf-8")
    figures: dict[str, Any] = {}
    for name in ("bare", "route"):  # warm up
        run_wrk(ports[name], 8, 1, lua, pids[name])
    for conns in (1, 32):
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "route": []}
        for i in range(rounds):
            for name in ("bare", "route") if i % 2 == 0 else ("route", "bare"):
                runs[name].append(run_wrk(ports[name], conns, duration_s, lua, pids[name]))
        pairs = zip(runs["bare"], runs["route"], strict=True)
        ratios = [r["rate_per_s"] / b["rate_per_s"] for b, r in pairs]
        cpu = {n: median([r["server_cpu_us_per_request"] for r in runs[n]]) for n in runs}
        summary: dict[str, Any] = {
            name: {
                "rate_per_s": median([r["rate_per_s"] for r in runs[name]]),
                "p50_us": median([r["p50_us"] for r in runs[name]]),
                "p99_us": median([r["p99_us"] for r in runs[name]]),
                "server_cpu_us_per_request": cpu[name],
                "runs": runs[name],
            }
            for name in ("bare", "route")
        }
        summary["ratio_route_vs_bare"] = median(ratios)
        summary["ratios"] = ratios
        summary["cpu_ratio_bare_vs_route"] = cpu["bare"] / cpu["route"]
        for name in ("bare", "route"):
            s = summary[name]
            label = "bare FastAPI, same body" if name == "bare" else "POST /v1/route"
            print(
                f"{label + f', {conns} conn':<44} {s['rate_per_s']:>12,.0f}/s   "
                f"p50 {s['p50_us']:>9.1f} us   p99 {s['p99_us']:>9.1f} us   "
                f"server CPU {s['server_cpu_us_per_request']:>6.1f} us/req"
            )
        ratio, cpu_ratio = summary["ratio_route_vs_bare"], summary["cpu_ratio_bare_vs_route"]
        rounds_text = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"{'  ratio route / bare (median of rounds)':<44} {ratio:>12.2f}   ({rounds_text})")
        print(f"{'  CPU per request, bare / route':<44} {cpu_ratio:>12.2f}")
        figures[f"{conns}_conn"] = summary
    return figures


def scraped_decisions(port: int) -> int | None:
    """Decisions the server made, from its own ``/metrics`` (``tierwise_decisions_total``);
    None for a tierwise without ``/metrics`` (an older checkout measured for comparison)."""
    from prometheus_client.parser import text_string_to_metric_families

    resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    if resp.status_code == 404:
        return None
    text = resp.text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "tierwise_decisions":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


def stored_decisions(url: str) -> int:
    """Decisions stored in the database at ``url``."""

    async def count() -> int:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return int(
                    (await conn.execute(sa.text("SELECT count(*) FROM decision"))).scalar_one()
                )
        finally:
            await engine.dispose()

    return asyncio.run(count())


def wait_healthy(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 240  # a start-up on a loaded machine is slow
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--rounds", type=int, default=5, help="wrk runs per side (default 5)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument(
        "--pg",
        metavar="ADMIN_URL",
        help="serve from a scratch PostgreSQL database made on this server (a postgresql:// URL "
        "of a role that may create databases; dropped afterwards) instead of SQLite",
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if args.pg:
        with scratch_database(args.pg, "tierwise_bench_route") as url:
            run(args, url, "postgresql")
    else:
        run(args, f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}", "sqlite")


def run(args: argparse.Namespace, url: str, backend: str) -> None:
    """The whole benchmark against the database at ``url`` (migrated here)."""
    migrate.upgrade(url)
    asyncio.run(prepare(url))
    print(
        f"python {sys.version.split()[0]}, {backend}, policy 'default', "
        f"{len(REQUESTS)} request shapes"
    )
    figures: dict[str, Any] = {
        "bench": "route",
        "environment": {
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
            "policy": "default",
            "database": backend,
            "request_shapes": len(REQUESTS),
            "load_average": os.getloadavg(),
            "options": {k: v for k, v in vars(args).items() if k != "serve_bare"},
        },
        "in_process": asyncio.run(in_process(url)),
    }
    stored_before = stored_decisions(url)

    # Each server in its own process, as deployed: the load generator must not share its GIL.
    ports = {"route": free_port(), "bare": free_port()}
    env = {
        **os.environ,
        "TIERWISE_DATABASE_URL": url,
        "TIERWISE_RUN_SCHEDULER": "false",
        "TIERWISE_LOG_LEVEL": "WARNING",
    }
    commands = {
        "route": [sys.executable, "-m", "tierwise.cli", "serve", "--port", str(ports["route"])],
        "bare": [sys.executable, __file__, "--serve-bare", str(ports["bare"])],
    }
    servers = {n: subprocess.Popen(c, env=env, cwd=ROOT) for n, c in commands.items()}
    try:
        for name, server in servers.items():
            wait_healthy(ports[name], server)
        pids = {n: s.pid for n, s in servers.items()}
        figures["http"] = over_http(
            ports, pids, rounds=args.rounds, duration_s=args.duration, tmp=Path(tempfile.mkdtemp())
        )
        decided = scraped_decisions(ports["route"])
    finally:
        for server in servers.values():
            server.terminate()
        for server in servers.values():
            server.wait(timeout=30)
    # Every decision the server answered is in the database once it stopped (the writer's
    # last batch is written on shutdown): its own count, and at least what wrk counted.
    stored = stored_decisions(url) - stored_before
    answered = sum(
        r["requests"] - r["non_2xx"]
        for c in ("1_conn", "32_conn")
        for r in figures["http"][c]["route"]["runs"]
    )
    print(
        f"{'  decisions: answered (wrk), made, stored':<44} {answered:>12,} "
        f"{'?' if decided is None else f'{decided:,}':>9} {stored:>9,}"
    )
    figures["http"]["decisions"] = {"answered": answered, "made": decided, "stored": stored}
    if (decided is not None and stored != decided) or stored < answered:
        raise SystemExit(f"decisions lost: {decided} made, {answered} answered, {stored} stored")
    # A ratio means something only when both servers answered every call with a 2xx.
    refused = {
        name: sum(
            r["non_2xx"] for c in ("1_conn", "32_conn") for r in figures["http"][c][name]["runs"]
        )
        for name in ("bare", "route")
    }
    if any(refused.values()):
        raise SystemExit(f"non-2xx answers, so the ratio compares unlike work: {refused}")
    mean_us = 1e6 / figures["in_process"]["decide"]["rate_per_s"]
    print(f"{'decide() per call (mean)':<44} {mean_us:>12.2f} us")
    figures["in_process"]["decide_mean_us"] = mean_us
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
