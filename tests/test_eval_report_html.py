"""``report.html`` in a real browser: headless Chromium (Debian's ``chromium``) opens the file
over the DevTools protocol; every chart must be drawn (SVG shapes with a non-empty box), the
page must log no console error or exception and ask the network for nothing. The router metrics
(``router_metrics[benchmark]``, filled by ``evaluator.routing_curve``) are rendered from a
literal of their documented shape, RouteLLM's published points among them.

Without Chromium the test skips, except under ``CI=true``, where it fails (``.ci/run``
installs it)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from evaluator.datasets import load_held_out, replay_provider
from evaluator.evaluation import (
    EvalReport,
    EvalSpec,
    ResultsLog,
    build_report,
    render_html,
    render_json,
    render_markdown,
    run_eval,
)
from router.policy import builtin_policy_path, load_policy
from router.providers import Provider
from tests.conftest import DATASETS

CHEAP, REFERENCE = "mixtral-8x7b-instruct", "gpt-4-1106-preview"

ROUTER_METRICS: dict[str, Any] = {
    "benchmark": "mt_bench",
    "cheap_model": CHEAP,
    "strong_model": REFERENCE,
    "seeds": [1, 2, 3],
    "calibration_share": 0.5,
    "apgr": {"mean": 0.61, "min": 0.55, "max": 0.66},
    "cpt_50": {"mean": 0.31, "min": 0.25, "max": 0.38},
    "cpt_80": {"mean": 0.62, "min": 0.55, "max": 0.7},
    "random": {"apgr": 0.5, "cpt_50": 0.5, "cpt_80": 0.8},
    "oracle": {"apgr": 0.83, "cpt_50": 0.12, "cpt_80": 0.3},
    "points": [
        {"strong_share": 0.0, "quality": 8.34},
        {"strong_share": 0.25, "quality": 8.8},
        {"strong_share": 0.5, "quality": 9.1},
        {"strong_share": 1.0, "quality": 9.23},
    ],
    "routellm": [
        {"router": "mf (augmented)", "apgr": 0.802, "cpt_50": 0.134, "cpt_80": None},
        {"router": "random", "apgr": 0.5, "cpt_50": 0.4903, "cpt_80": None},
    ],
    "notes": ["Literal test figures, not measured."],
}


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> EvalReport:
    """A real recorded eval of MT-Bench, with the router metrics filled in."""
    held_out = load_held_out(DATASETS / "mt_bench.jsonl")
    spec = EvalSpec(
        [held_out], [CHEAP, REFERENCE], REFERENCE, load_policy(builtin_policy_path("replay"))
    )
    replay = replay_provider([held_out])

    def grading(_model: str) -> Provider:
        return replay

    log = ResultsLog(tmp_path_factory.mktemp("html") / "results.jsonl")
    run = asyncio.run(run_eval(spec, log, answer_provider=None, grading_provider=grading))
    built = build_report(spec, log, run, seconds=1.0, threshold=0.2)
    log.close()
    built.router_metrics["mt_bench"] = ROUTER_METRICS
    return built


def test_the_markdown_and_json_carry_the_router_metrics(report: EvalReport) -> None:
    md = render_markdown(report)
    assert "### Router metrics (cheap `mixtral-8x7b-instruct`" in md
    assert "| apgr | 0.610 [0.550, 0.660] | 0.500 | 0.830 |" in md
    assert "| mf (augmented) | 0.802 | 0.134 | n/a |" in md
    data = json.loads(render_json(report))
    assert data["router_metrics"]["mt_bench"] == ROUTER_METRICS
    assert EvalReport.model_validate(data) == report


@asynccontextmanager
async def devtools(browser: str, profile: Path) -> AsyncIterator[str]:
    """Headless Chromium on a free DevTools port; yields the page target's WebSocket URL."""
    proc = await asyncio.create_subprocess_exec(
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "about:blank",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(600):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient() as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        yield str(page["webSocketDebuggerUrl"])
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


CHARTS = """JSON.stringify([...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  const shapes = [...svg.querySelectorAll('circle,rect,line,polyline,polygon')]
    .filter(el => { const b = el.getBBox(); return b.width > 0 || b.height > 0; }).length;
  return {title: svg.querySelector('title').textContent, w: box.width, h: box.height, shapes};
}))"""


async def open_page(ws_url: str, url: str) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Navigate to ``url``; return the charts, the console errors and the network requests."""
    errors: list[str] = []
    requests: list[str] = []
    async with websockets.connect(ws_url, max_size=2**24) as ws:
        ids = iter(range(1, 10_000))

        async def call(method: str, **params: Any) -> dict[str, Any]:
            mine = next(ids)
            await ws.send(json.dumps({"id": mine, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == mine:
                    assert "error" not in msg, msg
                    return dict(msg.get("result", {}))
                note(msg)

        def note(msg: dict[str, Any]) -> None:
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(json.dumps(params.get("args")))
            elif method == "Runtime.exceptionThrown":
                errors.append(json.dumps(params.get("exceptionDetails")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(str(params["entry"].get("text")))
            elif method == "Network.requestWillBeSent":
                requests.append(str(params["request"]["url"]))

        for domain in ("Page", "Runtime", "Log", "Network"):
            await call(f"{domain}.enable")
        await call("Page.navigate", url=url)
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
            note(msg)
            if msg.get("method") == "Page.loadEventFired":
                break
        got = await call("Runtime.evaluate", expression=CHARTS, returnByValue=True)
        charts = json.loads(got["result"]["value"])
    return charts, errors, requests


async def test_report_html_draws_its_charts_in_headless_chromium(
    report: EvalReport, tmp_path: Path
) -> None:
    browser = chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    profile = tmp_path / "profile"
    profile.mkdir()
    async with devtools(browser, profile) as ws_url:
        charts, errors, requests = await open_page(ws_url, page.as_uri())
    assert errors == []
    assert requests == [page.as_uri()]  # the page itself, nothing from the network
    titles = [c["title"] for c in charts]
    assert titles == [
        "mt_bench: cost-quality (in-sample)",
        f"mt_bench: disagreement with {REFERENCE} per class",
        "mt_bench: serving cost per item (USD)",
        "mt_bench: router metrics",
    ]
    for chart in charts:
        assert chart["w"] > 0 and chart["h"] > 0, chart
        assert chart["shapes"] > 0, chart
    rates = charts[1]
    assert rates["shapes"] >= 2 * 16  # a dot and a bar per class and model, and the grid
    html = page.read_text(encoding="utf-8")
    assert "RouteLLM mf (augmented)" in html and "<script" not in html
