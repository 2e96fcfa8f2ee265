"""Gateway benchmark: what tierwise's OpenAI-compatible gateway and LiteLLM's proxy add over
calling the upstream directly.

Three legs, one loopback upstream, one client, the same request, in one run:

1. **direct**: the client calls the upstream itself (the baseline);
2. **tierwise**: ``POST /v1/chat/completions`` on ``tierwise serve`` with
   ``model: "tierwise/bench"``: the routing table picks ``bench-mini`` (provider ``openai``,
   ``TIERWISE_OPENAI_BASE_URL`` = the upstream), the gateway calls it through the openai SDK and
   records decision and outcome off the hot path (SQLite in a temp dir; 5% of decisions
   sampled, their text stored; ``TIERWISE_RUN_SCHEDULER=false``, so nothing is graded);
3. **litellm**: LiteLLM's proxy (``litellm[proxy]`` in its own venv) with a config.yaml that
   routes ``bench-model`` to ``openai/bench-mini`` at the upstream's ``api_base``. Turned off
   for a fair comparison, as tierwise has none of them: telemetry
   (``LITELLM_TELEMETRY_DISABLED=true``), the database (no ``DATABASE_URL``; spend and error
   logs off in ``general_settings``), verbose and access logging (``LITELLM_LOG=ERROR``,
   ``set_verbose: false``), retries (``num_retries: 0``), the remote model cost map fetch
   (``LITELLM_LOCAL_MODEL_COST_MAP=True``: there is no network) and key auth (no master key,
   ``LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true``; tierwise's gateway asks for no
   key either). Both servers run uvicorn on uvloop with httptools: ``tierwise serve`` asks for
   them (both are tierwise dependencies), LiteLLM runs uvloop by default and its uvicorn picks
   httptools up when installed, which the bench does (``--litellm-spec``); the stack each leg
   ran on is in the JSON.

The upstream (``bench/upstream.py``) is a bare asyncio HTTP/1.1 server in its own process that
answers at once: a JSON ``chat.completion``, or an SSE stream of 8 text chunks written in one go
(``--chunk-gap-ms`` spaces them). The servers run one process and one uvicorn worker each; the
client is ``httpx2.AsyncClient`` (the openai SDK's HTTP client; at 32 connections it does
about twice the rate of ``httpx``) with keep-alive, in this process: a new client for every run,
its connections opened by a few untimed calls. Every reply is checked
(status 200, the upstream's text, a stream's ``[DONE]``), so a proxy that fails cannot look
fast. After each run the bench waits until the proxy's process is idle, so work it defers past
its replies (logging, batch writes) is charged to its CPU figure, not to the next leg.

Phases, each run on every leg in ``--rounds`` interleaved rounds (the leg order rotates each
round, so drift on the machine is shared) after ``--warmup`` requests per leg and phase:

- ``latency``: non-streaming, 1 connection, ``--requests`` calls: p50 and p99 of the time from
  sending the request to the body read, and the rate (throughput at 1 connection);
- ``stream``: ``"stream": true`` with ``stream_options.include_usage``, 1 connection,
  ``--stream-requests`` calls: time to first token (the first SSE event with non-empty
  ``delta.content``) p50/p99, and the time to ``[DONE]``;
- ``load``: non-streaming, ``--connections`` (32) concurrent connections,
  ``--load-requests`` calls: requests per second (and p50/p99 under load).

"Added ms" is a leg's percentile minus direct's (a difference of percentiles); for throughput
it is the added wall time per request, ``1000/rate - 1000/direct_rate``. The last column is
tierwise's added over LiteLLM's. ``server CPU`` is the proxy process's user+system CPU per
request (``/proc/<pid>/stat``, its deferred work included). ``self-reported`` is the median of
what each proxy says it added in a response header (``x-tierwise-overhead-ms``,
``x-litellm-overhead-duration-ms``), non-streaming at 1 connection: their own clocks leave out
the HTTP server and framework, which the measured figures include.

Goal (the gateway issue): tierwise adds at most 1.5 ms at p50, and at most a third of what
LiteLLM adds. On 2 cores client, upstream and proxy share the CPUs, so the throughput rows
measure CPU per request as much as latency; anything else running on the machine shows in the
load average the bench prints (and writes), and in its p99s.

When the gateway does not answer right (a build without it answers 404 on the path), the
tierwise leg is skipped, said in the output and in the JSON, and the other two still run.

Run: ``.venv/bin/python bench/gateway.py`` (about 1-2 minutes on 2 cores, plus a one-time
install of ``litellm[proxy]`` into ``~/.cache/tierwise-bench/litellm-venv``; ``--litellm
PATH`` uses an installed ``litellm`` executable instead, ``--skip-litellm`` leaves it out).

``--json PATH`` also writes the printed figures as one JSON object (times in ms)::

    {"bench": "gateway",
     "environment": {"python": "3.11.7", "cpu_count": 2, "litellm_version": "1.x" | null,
                     "litellm_stack": {"litellm", "uvicorn", "uvloop", "httptools": version
                                       | null} | null, "tierwise_stack": {...the same...},
                     "load_average_1min_at_start": float, "load_average_1min_at_end": float,
                     "tierwise_recorded": {"decision": int, "outcome": int, "sample": int},
                     "options": {...every flag...}, "tierwise_env": {...}, "litellm_env": {...},
                     "litellm_config": {...}},
     "skipped": {"tierwise": "reason", ...},
     "legs": {"direct" | "tierwise" | "litellm":
              {"latency": FIGURES, "stream": FIGURES, "load": FIGURES}},
     "added_ms": {"tierwise" | "litellm": {"p50": float, "p99": float, "ttft_p50": float,
                  "ttft_p99": float, "stream_p50": float, "per_request_1_conn": float,
                  "per_request_32_conn": float}},
     "tierwise_vs_litellm": {...the same keys: tierwise's added / LiteLLM's...},
     "goals": {"p50_at_most_1_5_ms": bool | null, "ttft_p50_at_most_1_5_ms": bool | null,
               "p50_at_most_a_third_of_litellm": bool | null,
               "ttft_p50_at_most_a_third_of_litellm": bool | null},
     "seconds": float}

where FIGURES is ``{"requests": int, "connections": int, "seconds": float, "rate_per_s": float,
"p50_ms": float, "p99_ms": float, "server_cpu_ms_per_request": float | null,
"self_reported_overhead_p50_ms": float | null}`` and, for ``stream``, also ``"ttft_p50_ms"``,
``"ttft_p99_ms"``. ``direct`` is the baseline measured in the same run; a skipped leg's keys
are absent (and its ratios null); ``seconds`` is the time measuring took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent

LEGS = ("direct", "tierwise", "litellm")
LABEL = {"direct": "direct", "tierwise": "tierwise", "litellm": "LiteLLM"}
TASK_TYPE = "bench"
UPSTREAM_MODEL = "bench-mini"
LITELLM_MODEL = "bench-model"
DEFAULT_LITELLM_VENV = Path.home() / ".cache" / "tierwise-bench" / "litellm-venv"
MESSAGES = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": "Tell me something about foxes and dogs."},
]

BENCH_POLICY = f"""
# bench/gateway.py: every model is served by the "openai" provider (the loopback upstream).
name = "gateway-bench"
default_tier = "trivial"
premium_model = "bench-large"
ladder = ["{UPSTREAM_MODEL}", "bench-large"]

[tier_models]
trivial = "{UPSTREAM_MODEL}"
standard = "{UPSTREAM_MODEL}"
complex = "bench-large"
critical = "bench-large"

[[models]]
name = "{UPSTREAM_MODEL}"
provider = "openai"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60

[[models]]
name = "bench-large"
provider = "openai"
input_usd_per_mtok = 2.50
output_usd_per_mtok = 10.00

[[rules]]
task_types = ["{TASK_TYPE}"]
tier = "trivial"

[defaults]
sample_rate = 0.05
reference_model = "bench-large"
"""


# ---- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def log_troubles(path: Path, most: int = 10) -> list[str]:
    """The last ``most`` lines of a server's log that report an error or a traceback."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    marks = ("ERROR", "Traceback", "Exception")
    bad = [line for line in lines if any(m in line for m in marks)]
    return bad[-most:]


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; give up (with the log's tail) on exit or timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up:\n{tail(log)}")
        time.sleep(0.2)


@contextmanager
def process(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in ``cwd`` with stdout and stderr to ``log``; terminate it (then kill) on
    exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@contextmanager
def upstream(chunks: int, gap_ms: float) -> Iterator[int]:
    """Start ``bench/upstream.py``; yield its port; stop it (it exits when its stdin closes)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "upstream.py"),
            "--chunks",
            str(chunks),
            "--chunk-gap-ms",
            str(gap_ms),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if line[:1] != ["port"]:
            raise SystemExit(f"upstream did not start: {line}")
        yield int(line[1])
    finally:
        stdin: IO[str] | None = proc.stdin
        if stdin is not None:
            stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=10)


FOREIGN = ("TIERWISE_", "OPENAI_", "ANTHROPIC_")
"""Environment variables left out of both servers' environments (keys, base URLs, settings)."""


def tierwise_command() -> list[str]:
    exe = Path(sys.executable).with_name("tierwise")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tierwise.cli"]


def tierwise_env(tmp: Path, upstream_port: int) -> dict[str, str]:
    """What the tierwise leg sets (written to the JSON; the key is a placeholder). Everything
    else is at its default: ``gateway_upstream`` catalog, ``gateway_concurrency`` 512,
    ``gateway_max_retries`` 0."""
    return {
        "TIERWISE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        "TIERWISE_OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "TIERWISE_OPENAI_API_KEY": "bench",
        "TIERWISE_RUN_SCHEDULER": "false",
        "TIERWISE_LOG_LEVEL": "WARNING",
    }


@contextmanager
def tierwise_server(tmp: Path, settings: dict[str, str]) -> Iterator[tuple[str, int]]:
    """``tierwise db upgrade``, ``policy apply`` the bench policy, then ``tierwise serve``;
    yield (base URL, pid)."""
    # Nothing of the caller's environment configures it: tierwise also reads OPENAI_API_KEY.
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(settings)
    policy = tmp / "gateway-bench.toml"
    policy.write_text(BENCH_POLICY, encoding="utf-8")
    cmd = tierwise_command()
    for step in (["db", "upgrade"], ["policy", "apply", str(policy)]):
        done = subprocess.run(cmd + step, env=env, cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"tierwise {' '.join(step)} failed:\n{done.stdout}{done.stderr}")
    port = free_port()
    log = tmp / "tierwise.log"
    serve = [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with process(serve, env, log, tmp) as proc:
        wait_ready(f"http://127.0.0.1:{port}/healthz", proc, log, 60)
        yield f"http://127.0.0.1:{port}/v1", proc.pid


def recorded(tmp: Path) -> dict[str, int]:
    """Rows the tierwise leg wrote (decisions, outcomes, samples): proof it did its whole job
    (decisions and outcomes should be equal)."""

    def count() -> dict[str, int]:
        with sqlite3.connect(tmp / "bench.db") as db:
            return {
                table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in ("decision", "outcome", "sample")
            }

    # The writer flushes every 0.2 s: wait until two reads 0.5 s apart agree (at most 5 s).
    last = count()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = count()
        if now == last:
            break
        last = now
    return last


def _installed(python: Path, names: list[str]) -> dict[str, str | None]:
    """The installed version of each distribution in ``names`` in ``python``'s environment."""
    script = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try:\n"
        "        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    done = subprocess.run([str(python), "-c", script, *names], capture_output=True, text=True)
    try:
        found: dict[str, str | None] = json.loads(done.stdout)
    except ValueError:
        return dict.fromkeys(names)
    return found


def _name(spec: str) -> str:
    """The distribution a pip requirement names (``litellm[proxy]>=1`` -> ``litellm``)."""
    for mark in "[<>=!~ ;":
        spec = spec.split(mark)[0]
    return spec.strip()


def ensure_litellm(explicit: str | None, venv: Path, specs: list[str]) -> Path:
    """The ``litellm`` executable: ``explicit`` (used as it is), or ``venv``'s, created on first
    use; whatever of ``specs`` it lacks is installed there with pip."""
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise SystemExit(f"--litellm {explicit}: no such file")
        return path
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} for LiteLLM (once) ...", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip_up = [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"]
        subprocess.run(pip_up, check=True)
    have = _installed(python, [_name(s) for s in specs])
    missing = [s for s in specs if have.get(_name(s)) is None]
    if missing:
        print(f"installing {' '.join(missing)} into {venv} ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *missing], check=True)
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        raise SystemExit(f"{exe} is missing after installing {' '.join(specs)}")
    return exe


def litellm_stack(exe: Path) -> dict[str, str | None]:
    """Versions of what LiteLLM's proxy runs on (from the Python beside ``exe``): litellm,
    uvicorn, and uvicorn's optional uvloop and httptools (absent: asyncio's loop, h11)."""
    python = exe.with_name("python")
    names = ["litellm", "uvicorn", "uvloop", "httptools"]
    return _installed(python, names) if python.exists() else dict.fromkeys(names)


LITELLM_ENV = {
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_LOG": "ERROR",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
}


def litellm_config(upstream_port: int) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": LITELLM_MODEL,
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "bench",
                },
            }
        ],
        "litellm_settings": {
            "set_verbose": False,
            "json_logs": False,
            "num_retries": 0,
            "request_timeout": 60,
        },
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True},
    }


@contextmanager
def litellm_server(exe: Path, tmp: Path, config: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """LiteLLM's proxy on ``config`` (one uvicorn worker, no database); yield (base URL, pid)."""
    path = tmp / "litellm-config.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LITELLM_", *FOREIGN))
        and k not in ("DATABASE_URL", "DIRECT_URL", "REDIS_URL", "REDIS_HOST")
    }
    env.update(LITELLM_ENV)
    port = free_port()
    log = tmp / "litellm.log"
    cmd = [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    with process([*cmd, "--num_workers", "1"], env, log, tmp) as proc:
        wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, log, 180)
        yield f"http://127.0.0.1:{port}/v1", proc.pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children so far, s (``/proc/<pid>/stat``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


# ---- the client ------------------------------------------------------------------------------


async def settle(pid: int, timeout_s: float = 10.0) -> None:
    """Wait until ``pid`` is idle (at most one clock tick of CPU in 200 ms), so work a server
    defers past its replies (logging, batch writes) is not charged to the next leg's run."""
    deadline = time.monotonic() + timeout_s
    last = cpu_seconds(pid)
    tick = 1 / os.sysconf("SC_CLK_TCK")
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = cpu_seconds(pid)
        if now - last <= tick * 1.01:
            return
        last = now


OVERHEAD_HEADERS = {
    "tierwise": "x-tierwise-overhead-ms",
    "litellm": "x-litellm-overhead-duration-ms",
}
"""The response header in which each proxy reports what it added itself, ms."""


@dataclass
class Leg:
    name: str
    base_url: str
    model: str
    pid: int | None
    client: httpx.AsyncClient | None = None
    expected: str | None = None
    """The text every reply must carry: what the upstream answered the direct leg's probe."""


@dataclass
class Tally:
    """What one phase measured on one leg, over all its rounds."""

    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    reported_ms: list[float] = field(default_factory=list)
    """What the proxy said it added (:data:`OVERHEAD_HEADERS`), non-streaming calls only."""
    seconds: float = 0.0
    cpu_s: float | None = None


@dataclass(frozen=True)
class Phase:
    name: str
    stream: bool
    connections: int
    requests: int


class BadReply(Exception):
    pass


def body_for(model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


Reply = tuple[float, float, float | None]
"""(ms to the whole reply, ms to the first token, ms the proxy says it added or None)."""


def reported(response: httpx.Response, header: str | None) -> float | None:
    raw = response.headers.get(header) if header else None
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


async def call_plain(
    client: httpx.AsyncClient, body: dict[str, Any], expected: str | None, header: str | None
) -> Reply:
    """One non-streaming call (the first token is the whole reply). ``expected``: the text the
    reply must carry (None: any text); ``header``: where the proxy reports its overhead."""
    t0 = time.perf_counter_ns()
    response = await client.post("/chat/completions", json=body)
    elapsed = (time.perf_counter_ns() - t0) / 1e6
    if response.status_code != 200:
        raise BadReply(f"HTTP {response.status_code}: {response.text[:300]}")
    try:
        text = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BadReply(f"unreadable reply: {response.text[:300]}") from exc
    if not isinstance(text, str) or (expected is not None and text != expected):
        raise BadReply(f"wrong text: {text!r}")
    return elapsed, elapsed, reported(response, header)


async def call_stream(
    client: httpx.AsyncClient, body: dict[str, Any], expected: str | None, header: str | None
) -> Reply:
    """One streamed call: the whole reply is ``[DONE]``, the first token the first non-empty
    ``delta.content``; the reported overhead is only in the headers, before the stream."""
    t0 = time.perf_counter_ns()
    first: float | None = None
    parts: list[str] = []
    done = False
    async with client.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise BadReply(f"HTTP {response.status_code}: {response.text[:300]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            try:
                choices = json.loads(data).get("choices") or []
            except (ValueError, AttributeError) as exc:
                raise BadReply(f"unreadable event: {line[:300]}") from exc
            content = (choices[0].get("delta") or {}).get("content") if choices else None
            if content:
                if first is None:
                    first = (time.perf_counter_ns() - t0) / 1e6
                parts.append(content)
    elapsed = (time.perf_counter_ns() - t0) / 1e6
    text = "".join(parts)
    if not done or first is None or (expected is not None and text != expected):
        raise BadReply(f"bad stream: done={done}, text={text!r}")
    return elapsed, first, None


async def run_calls(leg: Leg, phase: Phase, n: int, tally: Tally | None) -> None:
    """``n`` calls of ``phase`` on ``leg`` from ``phase.connections`` workers; into ``tally``
    (None: a warm-up)."""
    assert leg.client is not None
    client = leg.client
    body = body_for(leg.model, phase.stream)
    call = call_stream if phase.stream else call_plain
    counter = iter(range(n))
    header = OVERHEAD_HEADERS.get(leg.name)
    latencies: list[float] = []
    ttfts: list[float] = []
    said: list[float] = []

    async def worker() -> None:
        for _ in counter:
            total, first, added = await call(client, body, leg.expected, header)
            latencies.append(total)
            ttfts.append(first)
            if added is not None:
                said.append(added)

    cpu0 = cpu_seconds(leg.pid) if leg.pid is not None else None
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(phase.connections, n))))
    seconds = time.perf_counter() - start
    if leg.pid is not None:
        await settle(leg.pid)  # its deferred work is charged to its CPU, not to the next run
    if tally is None:
        return
    tally.latencies_ms += latencies
    if phase.stream:
        tally.ttft_ms += ttfts
    tally.reported_ms += said
    tally.seconds += seconds
    if leg.pid is not None and cpu0 is not None:
        tally.cpu_s = (tally.cpu_s or 0.0) + cpu_seconds(leg.pid) - cpu0


async def probe(leg: Leg) -> str | None:
    """None when ``leg`` answers a plain and a streamed call right, else why not."""
    assert leg.client is not None
    try:
        await call_plain(leg.client, body_for(leg.model, False), leg.expected, None)
        await call_stream(leg.client, body_for(leg.model, True), leg.expected, None)
    except (BadReply, httpx.HTTPError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def expected_text(leg: Leg) -> str:
    """What the upstream answers (asked directly): every leg's replies must carry it."""
    async with httpx.AsyncClient(base_url=leg.base_url, timeout=30) as client:
        response = await client.post("/chat/completions", json=body_for(leg.model, False))
        response.raise_for_status()
        text = response.json()["choices"][0]["message"]["content"]
    if not isinstance(text, str) or not text:
        raise SystemExit(f"the upstream answered no text: {response.text[:300]}")
    return text


async def measure(legs: list[Leg], phases: list[Phase], rounds: int, warmup: int) -> Any:
    """Every phase on every leg: a warm-up, then ``rounds`` interleaved measured runs. Each run
    has a client of its own whose connections are opened by a few untimed calls first, so no
    run reuses a connection that sat idle through another leg's run (servers close those)."""
    tallies: dict[str, dict[str, Tally]] = {leg.name: {} for leg in legs}

    async def run(leg: Leg, phase: Phase, n: int, tally: Tally | None) -> None:
        limits = httpx.Limits(
            max_connections=phase.connections, max_keepalive_connections=phase.connections
        )
        async with httpx.AsyncClient(base_url=leg.base_url, timeout=60, limits=limits) as client:
            leg.client = client
            try:
                await run_calls(leg, phase, 2 * phase.connections, None)
                await run_calls(leg, phase, n, tally)
            finally:
                leg.client = None

    for phase in phases:
        for leg in legs:
            await run(leg, phase, warmup, None)
            tallies[leg.name][phase.name] = Tally()
        share, extra = divmod(phase.requests, rounds)
        for r in range(rounds):
            n = share + (1 if r < extra else 0)
            for leg in legs[r % len(legs) :] + legs[: r % len(legs)]:
                await run(leg, phase, n, tallies[leg.name][phase.name])
        print(f"  {phase.name}: done", flush=True)
    return tallies


async def probe_all(legs: list[Leg]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for leg in legs:
        leg.client = httpx.AsyncClient(base_url=leg.base_url, timeout=30)
        try:
            found[leg.name] = await probe(leg)
        finally:
            await leg.client.aclose()
            leg.client = None
    return found


# ---- figures ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures_of(phase: Phase, tally: Tally) -> dict[str, Any]:
    n = len(tally.latencies_ms)
    fig: dict[str, Any] = {
        "requests": n,
        "connections": phase.connections,
        "seconds": tally.seconds,
        "rate_per_s": n / tally.seconds,
        "p50_ms": pct(tally.latencies_ms, 0.50),
        "p99_ms": pct(tally.latencies_ms, 0.99),
        "server_cpu_ms_per_request": (
            None if tally.cpu_s is None else tally.cpu_s * 1000 / n if n else None
        ),
        "self_reported_overhead_p50_ms": (
            pct(tally.reported_ms, 0.50) if tally.reported_ms else None
        ),
    }
    if phase.stream:
        fig["ttft_p50_ms"] = pct(tally.ttft_ms, 0.50)
        fig["ttft_p99_ms"] = pct(tally.ttft_ms, 0.99)
    return fig


ROWS = [
    # (key in added_ms, label, phase, figure, is a rate)
    ("p50", "latency p50, ms (1 conn)", "latency", "p50_ms", False),
    ("p99", "latency p99, ms (1 conn)", "latency", "p99_ms", False),
    ("ttft_p50", "stream TTFT p50, ms", "stream", "ttft_p50_ms", False),
    ("ttft_p99", "stream TTFT p99, ms", "stream", "ttft_p99_ms", False),
    ("stream_p50", "stream to [DONE] p50, ms", "stream", "p50_ms", False),
    ("per_request_1_conn", "requests/s, 1 conn", "latency", "rate_per_s", True),
    ("per_request_32_conn", "requests/s, {c} conn", "load", "rate_per_s", True),
]


def added(legs: dict[str, Any], name: str, phase: str, key: str, rate: bool) -> float | None:
    if name not in legs or "direct" not in legs:
        return None
    got, base = float(legs[name][phase][key]), float(legs["direct"][phase][key])
    return 1000 / got - 1000 / base if rate else got - base


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def print_table(legs: dict[str, Any], connections: int) -> dict[str, Any]:
    added_ms: dict[str, dict[str, float | None]] = {"tierwise": {}, "litellm": {}}
    vs: dict[str, float | None] = {}
    header = (
        f"{'':<28}{'direct':>10}{'tierwise':>10}{'LiteLLM':>10}"
        f"{'tierwise +ms':>14}{'LiteLLM +ms':>13}{'tw / LiteLLM':>14}"
    )
    print(header)
    print("-" * len(header))
    for key, label, phase, fig, rate in ROWS:
        values = [legs[n][phase][fig] if n in legs else None for n in LEGS]
        for name in ("tierwise", "litellm"):
            added_ms[name][key] = added(legs, name, phase, fig, rate)
        vs[key] = ratio(added_ms["tierwise"][key], added_ms["litellm"][key])
        digits = 0 if rate else 2
        print(
            f"{label.format(c=connections):<28}"
            + "".join(f"{fmt(v, digits):>10}" for v in values)
            + f"{fmt(added_ms['tierwise'][key]):>14}{fmt(added_ms['litellm'][key]):>13}"
            + f"{fmt(vs[key]):>14}"
        )
    for label, phase, key in (
        ("server CPU ms/req, 1 conn", "latency", "server_cpu_ms_per_request"),
        ("server CPU ms/req, stream", "stream", "server_cpu_ms_per_request"),
        ("server CPU ms/req, {c} conn", "load", "server_cpu_ms_per_request"),
        ("self-reported +ms p50", "latency", "self_reported_overhead_p50_ms"),
    ):
        values = [legs[n][phase][key] if n in legs else None for n in LEGS]
        print(f"{label.format(c=connections):<28}" + "".join(f"{fmt(v):>10}" for v in values))
    print(
        "(+ms: the leg's figure minus direct's; for requests/s the added wall time per request,"
        " 1000/rate - 1000/direct)"
    )
    return {"added_ms": added_ms, "tierwise_vs_litellm": vs}


def goals(summary: dict[str, Any]) -> dict[str, bool | None]:
    tw = summary["added_ms"]["tierwise"]
    vs = summary["tierwise_vs_litellm"]
    found: dict[str, bool | None] = {}
    for key, label in (("p50", "p50"), ("ttft_p50", "ttft_p50")):
        found[f"{label}_at_most_1_5_ms"] = None if tw[key] is None else tw[key] <= 1.5
        found[f"{label}_at_most_a_third_of_litellm"] = None if vs[key] is None else vs[key] <= 1 / 3
    print()
    for name, ok in found.items():
        print(f"goal {name:<38} {'-' if ok is None else 'met' if ok else 'MISSED'}")
    return found


# ---- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800, help="latency phase, per leg")
    parser.add_argument("--stream-requests", type=int, default=400, help="stream phase, per leg")
    parser.add_argument("--load-requests", type=int, default=800, help="load phase, per leg")
    parser.add_argument("--connections", type=int, default=32, help="load phase connections")
    parser.add_argument("--warmup", type=int, default=100, help="requests per leg and phase")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per phase")
    parser.add_argument("--chunks", type=int, default=8, help="text chunks of a streamed reply")
    parser.add_argument("--chunk-gap-ms", type=float, default=0.0, help="between text chunks")
    parser.add_argument("--skip-tierwise", action="store_true")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--litellm", metavar="PATH", help="an installed litellm executable")
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=DEFAULT_LITELLM_VENV,
        help="where litellm[proxy] is installed on first use (default: %(default)s)",
    )
    parser.add_argument(
        "--litellm-spec",
        nargs="+",
        default=["litellm[proxy]", "httptools"],
        help="what pip installs into --litellm-venv (default: %(default)s; httptools gives "
        "LiteLLM's uvicorn the HTTP parser tierwise's has)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()
    if min(args.requests, args.stream_requests, args.load_requests, args.rounds) < 1:
        parser.error("request counts and --rounds must be >= 1")

    phases = [
        Phase("latency", False, 1, args.requests),
        Phase("stream", True, 1, args.stream_requests),
        Phase("load", False, args.connections, args.load_requests),
    ]
    litellm_exe = (
        None
        if args.skip_litellm
        else ensure_litellm(args.litellm, args.litellm_venv, args.litellm_spec)
    )
    litellm_on = None if litellm_exe is None else litellm_stack(litellm_exe)
    version = None if litellm_on is None else litellm_on["litellm"]
    skipped: dict[str, str] = {}
    mine = _installed(Path(sys.executable), ["tierwise", "uvicorn", "uvloop", "httptools"])
    environment: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "litellm_version": version,
        "litellm_stack": litellm_on,
        "tierwise_stack": mine,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory() as tmp_dir, ExitStack() as stack:
        tmp = Path(tmp_dir)
        port = stack.enter_context(upstream(args.chunks, args.chunk_gap_ms))
        legs = [Leg("direct", f"http://127.0.0.1:{port}/v1", UPSTREAM_MODEL, None)]
        if args.skip_tierwise:
            skipped["tierwise"] = "--skip-tierwise"
        else:
            settings = tierwise_env(tmp, port)
            environment["tierwise_env"] = settings
            url, pid = stack.enter_context(tierwise_server(tmp, settings))
            legs.append(Leg("tierwise", url, f"tierwise/{TASK_TYPE}", pid))
        if litellm_exe is None:
            skipped["litellm"] = "--skip-litellm"
        else:
            config = litellm_config(port)
            environment["litellm_env"] = LITELLM_ENV
            environment["litellm_config"] = config
            url, pid = stack.enter_context(litellm_server(litellm_exe, tmp, config))
            legs.append(Leg("litellm", url, LITELLM_MODEL, pid))

        text = asyncio.run(expected_text(legs[0]))
        for leg in legs:
            leg.expected = text
        for name, problem in asyncio.run(probe_all(legs)).items():
            if problem is None:
                continue
            if name != "tierwise":
                raise SystemExit(f"{name} leg does not answer right: {problem}")
            skipped["tierwise"] = f"the gateway does not answer right (not built yet?): {problem}"
            print(f"tierwise leg skipped: {skipped['tierwise']}", file=sys.stderr)
        legs = [leg for leg in legs if leg.name not in skipped]

        print(
            f"gateway bench: python {environment['python']}, {environment['cpu_count']} cores, "
            f"LiteLLM {version or '-'}; legs: {', '.join(LABEL[leg.name] for leg in legs)}; "
            f"{args.requests} / {args.stream_requests} / {args.load_requests} requests per leg "
            f"(latency / stream / load at {args.connections} conn) in {args.rounds} rounds, "
            f"{args.warmup} warm-up"
        )
        for name, on in (("tierwise", mine), ("LiteLLM", litellm_on)):
            if on is not None:
                print(f"  {name} on " + ", ".join(f"{k} {v or '-'}" for k, v in on.items()))
        started = time.perf_counter()
        tallies = asyncio.run(measure(legs, phases, args.rounds, args.warmup))
        seconds = time.perf_counter() - started
        environment["load_average_1min_at_end"] = os.getloadavg()[0]
        if "tierwise" in tallies:
            environment["tierwise_recorded"] = recorded(tmp)
            print(f"tierwise recorded (warm-ups included): {environment['tierwise_recorded']}")
        for name in ("tierwise", "litellm"):
            troubles = log_troubles(tmp / f"{name}.log")
            if troubles:
                print(f"{LABEL[name]} logged errors (last {len(troubles)}):")
                print("\n".join(troubles))
    results = {
        name: {phase.name: figures_of(phase, by_phase[phase.name]) for phase in phases}
        for name, by_phase in tallies.items()
    }
    load = environment["load_average_1min_at_start"], environment["load_average_1min_at_end"]
    print(f"measured in {seconds:.0f} s; load average (1 min) {load[0]:.2f} -> {load[1]:.2f}\n")
    summary = print_table(results, args.connections)
    for name, why in skipped.items():
        print(f"{LABEL[name]}: skipped ({why})")
    found = goals(summary)
    if args.json:
        out = {
            "bench": "gateway",
            "environment": environment,
            "skipped": skipped,
            "legs": results,
            **summary,
            "goals": found,
            "seconds": seconds,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
