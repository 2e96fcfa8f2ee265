"""The batch lane, driven by the official ``openai`` SDK's ``files`` and ``batches`` clients over
real HTTP, against a loopback server of both providers' batch APIs (``tests/batch_wire.py``).
The lane's jobs are run directly (``Lane.submit`` / ``Lane.poll``); every row is read back from
the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr
from sqlmodel import select

from router.db import make_engine, session_factory, utcnow
from router.errors import PolicyError
from router.lane import Lane
from router.models import Decision, LaneBatch, LaneItem, LaneUpstream, Outcome, Sample
from router.offpeak import inside, next_open, parse_window, zone
from router.policy import parse_policy
from router.pricing import Usage, cost_nusd
from tests.batch_wire import BatchWire, anthropic_succeeded, openai_ok
from tests.conftest import apply, make_settings
from tests.serving import served
from tests.test_gateway import POLICY
from tierwise.app import create_app

Lines = list[dict[str, Any]]


def line(custom_id: str, model: str, text: str, **extra: Any) -> dict[str, Any]:
    """One input line: a Chat Completions request for ``model``."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(rows: Lines) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def openai_answers(lines: Lines) -> tuple[str, Lines | None, Lines | None]:
    """Every line answered, in reverse order; the text names the line's first message."""
    out = [
        openai_ok(ln["custom_id"], f"re: {ln['body']['messages'][0]['content']}", 100, 10)
        for ln in reversed(lines)
    ]
    return "completed", out, None


def anthropic_answers(requests: Lines) -> Lines:
    return [
        anthropic_succeeded(r["custom_id"], f"re: {r['params']['messages'][0]['content']}", 200, 20)
        for r in reversed(requests)
    ]


@dataclass
class LaneService:
    url: str
    wire: BatchWire
    lane: Lane
    client: openai.AsyncOpenAI
    database_url: str

    async def create(self, rows: Lines) -> str:
        uploaded = await self.client.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch")
        batch = await self.client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "in_progress"
        return batch.id

    async def output(self, file_id: str | None) -> Lines:
        assert file_id is not None
        text = (await self.client.files.content(file_id)).text
        return [json.loads(t) for t in text.splitlines()]

    async def rows(self, table: Any) -> list[Any]:
        engine = make_engine(self.database_url)
        try:
            async with session_factory(engine)() as session:
                return list((await session.exec(select(table))).all())
        finally:
            await engine.dispose()


@asynccontextmanager
async def lane_app(
    database_url: str, wire: BatchWire, *, apply_policy: bool = True, **overrides: object
) -> AsyncIterator[LaneService]:
    if apply_policy:
        engine = make_engine(database_url)
        await apply(session_factory(engine), parse_policy(POLICY))
        await engine.dispose()
    settings = make_settings(
        database_url,
        openai_api_key=SecretStr("sk-upstream"),
        openai_base_url=f"{wire.url}/v1",
        anthropic_api_key=SecretStr("sk-ant-upstream"),
        anthropic_base_url=wire.url,
        **overrides,
    )
    app = create_app(settings)
    async with served(app) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="caller", max_retries=0)
        try:
            yield LaneService(url, wire, app.state.lane, client, database_url)
        finally:
            await client.close()


@pytest.fixture
def wire() -> Any:
    with BatchWire() as server:
        server.openai_outcome = openai_answers
        server.anthropic_outcome = anthropic_answers
        yield server


@pytest.fixture
async def svc(database_url: str, wire: BatchWire) -> AsyncIterator[LaneService]:
    async with lane_app(database_url, wire) as service:
        yield service


MIXED = [
    line("first", "tierwise/classify", "one"),  # trivial -> small (openai)
    line("second", "tierwise/summarize", "two", max_tokens=50),  # critical -> claude
    line("third", "tierwise/classify", "three"),
    line("fourth", "big", "four"),  # a catalog model: shadow mode, sent to big
]


async def test_a_mixed_batch_is_routed_per_line_split_per_model_and_assembled_in_custom_ids(
    svc: LaneService,
) -> None:
    batch_id = await svc.create(MIXED)
    run = await svc.lane.submit()
    assert (run.submitted, run.items_sent) == (3, 4)
    creates = [h for h in svc.wire.hits if h[0] == "POST" and "batches" in h[1]]
    assert sorted(creates) == [
        ("POST", "/v1/batches"),
        ("POST", "/v1/batches"),
        ("POST", "/v1/messages/batches"),
    ]
    sent = {
        bid: [(r["body"] if "body" in r else r["params"])["model"] for r in rows]
        for bid, rows in svc.wire.submitted.items()
    }
    assert sorted(m for models in sent.values() for m in models) == [
        "big",
        "claude-x-20241022",
        "small-2024-07-18",
        "small-2024-07-18",
    ]
    assert (await svc.client.batches.retrieve(batch_id)).status == "in_progress"

    polled = await svc.lane.poll()
    assert (polled.ended, polled.succeeded, polled.finished) == (3, 4, 1)
    batch = await svc.client.batches.retrieve(batch_id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (4, 4)
    assert batch.request_counts.failed == 0
    assert batch.error_file_id is None
    out = await svc.output(batch.output_file_id)
    assert [o["custom_id"] for o in out] == ["first", "second", "third", "fourth"]
    texts = [o["response"]["body"]["choices"][0]["message"]["content"] for o in out]
    assert texts == ["re: one", "re: two", "re: three", "re: four"]
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in out)

    decisions = {d.id: d for d in await svc.rows(Decision)}
    items = {i.custom_id: i for i in await svc.rows(LaneItem)}
    assert {c: (i.model, i.task_class) for c, i in items.items()} == {
        "first": ("small", "classify"),
        "second": ("claude", "summarize"),
        "third": ("small", "classify"),
        "fourth": ("big", "default"),
    }
    assert decisions[items["fourth"].decision_id].shadow is True
    outcomes = {o.decision_id: o for o in await svc.rows(Outcome)}
    assert set(outcomes) == {i.decision_id for i in items.values()}
    # Booked once, at half the catalog price (batch_discount 0.5).
    catalog = {m.name: m for m in parse_policy(POLICY).spec.models}
    small, claude = catalog["small"], catalog["claude"]
    half_small = cost_nusd(
        Usage(input_tokens=100, output_tokens=10), small, discount=Decimal("0.5")
    )
    half_claude = cost_nusd(
        Usage(input_tokens=200, output_tokens=20), claude, discount=Decimal("0.5")
    )
    assert outcomes[items["first"].decision_id].cost_nusd == half_small
    assert outcomes[items["second"].decision_id].cost_nusd == half_claude
    assert half_small is not None and half_small * 2 == cost_nusd(
        Usage(input_tokens=100, output_tokens=10), small
    )
    # Sampled like any answer (the test policy samples every decision).
    samples = {s.decision_id: s for s in await svc.rows(Sample)}
    assert samples[items["second"].decision_id].output_text == "re: two"
    # A shadow-mode line's sample grades the model tierwise would have chosen (small).
    assert samples[items["fourth"].decision_id].answer_model == "small"
    assert samples[items["first"].decision_id].answer_model is None

    # The cost view shows the batch share and what the discount saved, to the nano-USD.
    async with httpx.AsyncClient(base_url=svc.url) as http:
        view = (await http.get("/v1/costs")).json()
    totals = view["totals"]
    lane_items = await svc.rows(LaneItem)
    assert (totals["batch_requests"], totals["batch_share"]) == (4, 1.0)
    assert (
        totals["batch_serving_nusd"]
        == totals["serving_nusd"]
        == sum(o.cost_nusd or 0 for o in outcomes.values())
    )
    assert totals["batch_saved_nusd"] == sum(
        (i.realtime_cost_nusd or 0) - (outcomes[i.decision_id].cost_nusd or 0) for i in lane_items
    )
    assert totals["batch_saved_nusd"] == totals["batch_serving_nusd"]  # a 50% discount

    # A second poll finds nothing more to do and books nothing twice.
    again = await svc.lane.poll()
    assert (again.ended, again.succeeded) == (0, 0)
    assert len(await svc.rows(Outcome)) == 4


async def test_an_expired_part_is_sent_again_then_reported_when_its_attempts_are_spent(
    database_url: str, wire: BatchWire
) -> None:
    def half_expired(lines: Lines) -> tuple[str, Lines | None, Lines | None]:
        ok = [openai_ok(ln["custom_id"], "done", 10, 1) for ln in lines[:1]]
        expired = [
            {
                "id": "r",
                "custom_id": ln["custom_id"],
                "response": None,
                "error": {"code": "batch_expired", "message": "expired"},
            }
            for ln in lines[1:]
        ]
        return "expired", ok, expired

    wire.openai_outcome = half_expired
    async with lane_app(database_url, wire, lane_max_attempts=2) as svc:
        batch_id = await svc.create([line(f"c{i}", "tierwise/classify", f"q{i}") for i in range(3)])
        await svc.lane.submit()
        first = await svc.lane.poll()
        assert (first.succeeded, first.requeued, first.finished) == (1, 2, 0)
        assert (await svc.client.batches.retrieve(batch_id)).status == "in_progress"
        await svc.lane.submit()
        second = await svc.lane.poll()
        assert (second.succeeded, second.expired, second.finished) == (1, 1, 1)
        batch = await svc.client.batches.retrieve(batch_id)
        assert batch.status == "expired"
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
        out = await svc.output(batch.output_file_id)
        errors = await svc.output(batch.error_file_id)
        assert [o["custom_id"] for o in out] == ["c0", "c1"]
        assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("c2", "batch_expired")]
        assert len(await svc.rows(Outcome)) == 2


async def test_a_failed_line_inside_a_batch_is_in_the_error_file_with_its_status(
    svc: LaneService,
) -> None:
    def one_refused(lines: Lines) -> tuple[str, Lines | None, Lines | None]:
        bad = {
            "id": "r",
            "custom_id": lines[1]["custom_id"],
            "response": {
                "status_code": 400,
                "request_id": "x",
                "body": {"error": {"message": "bad max_tokens"}},
            },
            "error": None,
        }
        return "completed", [openai_ok(lines[0]["custom_id"], "ok", 5, 1), bad], None

    svc.wire.openai_outcome = one_refused
    batch_id = await svc.create(
        [line("a", "tierwise/classify", "x"), line("b", "tierwise/classify", "y")]
    )
    await svc.lane.submit()
    run = await svc.lane.poll()
    assert (run.succeeded, run.failed) == (1, 1)
    batch = await svc.client.batches.retrieve(batch_id)
    assert batch.status == "completed"
    errors = await svc.output(batch.error_file_id)
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("b", 400)]
    assert errors[0]["error"]["code"] == "upstream_error"


@pytest.mark.parametrize(
    ("rows", "line_no", "field"),
    [
        ([line("a", "tierwise/classify", "x"), "{not json"], 2, "line 2: line"),
        (
            [line("a", "tierwise/classify", "x"), line("a", "tierwise/classify", "y")],
            2,
            "line 2: custom_id",
        ),
        ([line("a", "no-such-model", "x")], 1, "line 1: body.model"),
        (
            [
                line("a", "tierwise/classify", "x"),
                {**line("b", "tierwise/classify", "y"), "url": "/v1/embeddings"},
            ],
            2,
            "line 2: url",
        ),
        ([line("a", "tierwise/classify", "x", stream=True)], 1, "line 1: body.stream"),
        (
            [
                {
                    "custom_id": "a",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "tierwise/classify", "messages": []},
                }
            ],
            1,
            "line 1: body.messages",
        ),
    ],
)
async def test_a_bad_input_file_is_refused_at_create_naming_the_line_and_nothing_is_kept(
    svc: LaneService, rows: list[Any], line_no: int, field: str
) -> None:
    data = b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)
    uploaded = await svc.client.files.create(file=("in.jsonl", data), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        await svc.client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["field"] == field
    assert f"line {line_no}" in error["message"]
    assert await svc.rows(LaneBatch) == []
    assert await svc.rows(Decision) == []
    await svc.lane.submit()
    assert [h for h in svc.wire.hits if h[0] == "POST"] == []


async def test_the_lane_refuses_other_purposes_windows_and_unknown_files(svc: LaneService) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await svc.client.files.create(file=("in.jsonl", b"{}\n"), purpose="fine-tune")
    assert caught.value.body["field"] == "purpose"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        await svc.client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert missing.value.body["field"] == "input_file_id"  # type: ignore[index]
    uploaded = await svc.client.files.create(
        file=("in.jsonl", jsonl([line("a", "tierwise/classify", "x")])), purpose="batch"
    )
    with pytest.raises(openai.BadRequestError) as window:
        await svc.client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="1h",  # type: ignore[arg-type]
        )
    assert window.value.body["field"] == "completion_window"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await svc.client.batches.retrieve("batch_nope")


async def test_cancel_ends_queued_lines_at_once_and_submitted_ones_through_the_provider(
    svc: LaneService,
) -> None:
    queued = await svc.create([line("q", "tierwise/classify", "x")])
    cancelled = await svc.client.batches.cancel(queued)
    assert cancelled.status == "cancelled"
    errors = await svc.output(cancelled.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("q", "batch_cancelled")]

    svc.wire.hold = True
    running = await svc.create(
        [line("a", "tierwise/classify", "x"), line("b", "tierwise/summarize", "y")]
    )
    await svc.lane.submit()
    assert (await svc.lane.poll()).ended == 0
    assert (await svc.client.batches.cancel(running)).status == "cancelling"
    run = await svc.lane.poll()
    assert (run.ended, run.cancelled, run.finished) == (2, 2, 1)
    assert ("POST", "/v1/batches/batch_2/cancel") in svc.wire.hits or any(
        h[1].endswith("/cancel") and h[1].startswith("/v1/batches/") for h in svc.wire.hits
    )
    assert any(
        h[1].startswith("/v1/messages/batches/") and h[1].endswith("/cancel") for h in svc.wire.hits
    )
    batch = await svc.client.batches.retrieve(running)
    assert batch.status == "cancelled"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
    # Nothing lost: the cancelled queued batch is still cancelled, nothing was booked.
    assert (await svc.client.batches.retrieve(queued)).status == "cancelled"
    assert await svc.rows(Outcome) == []


async def test_a_batch_survives_a_restart_between_create_and_results(
    database_url: str, wire: BatchWire
) -> None:
    async with lane_app(database_url, wire) as first:
        batch_id = await first.create(MIXED[:2])
    async with lane_app(database_url, wire, apply_policy=False) as second:
        await second.lane.submit()
    async with lane_app(database_url, wire, apply_policy=False) as third:
        run = await third.lane.poll()
        assert (run.succeeded, run.finished) == (2, 1)
        batch = await third.client.batches.retrieve(batch_id)
        assert batch.status == "completed"
        assert [o["custom_id"] for o in await third.output(batch.output_file_id)] == [
            "first",
            "second",
        ]


async def test_two_processes_submit_each_upstream_batch_exactly_once(
    database_url: str, wire: BatchWire
) -> None:
    async with (
        lane_app(database_url, wire) as one,
        lane_app(database_url, wire, apply_policy=False) as two,
    ):
        await one.create(MIXED)
        await asyncio.gather(one.lane.submit(), two.lane.submit(), one.lane.submit())
        creates = [h for h in wire.hits if h[0] == "POST" and h[1].endswith("batches")]
        assert len(creates) == 3
        sent = sorted(r["custom_id"] for rows in wire.submitted.values() for r in rows)
        assert len(sent) == len(set(sent)) == 4
        ups = await one.rows(LaneUpstream)
        assert sorted(u.status for u in ups) == ["submitted"] * 3


async def test_a_submission_cut_off_mid_call_is_reported_never_sent_again(
    database_url: str, wire: BatchWire
) -> None:
    gate = threading.Event()
    wire.create_gate = gate
    async with lane_app(database_url, wire) as svc:
        batch_id = await svc.create([line("a", "tierwise/classify", "x")])
        task = asyncio.create_task(svc.lane.submit())
        assert await asyncio.to_thread(wire.create_arrived.wait, 10)
        task.cancel()  # the process dies while the provider holds the create call
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        later = utcnow() + timedelta(minutes=11)
        run = await svc.lane.submit(later)
        assert run.failed == 1
        assert run.submitted == 0
        batch = await svc.client.batches.retrieve(batch_id)
        assert batch.status == "completed"
        errors = await svc.output(batch.error_file_id)
        assert errors[0]["error"]["code"] == "submission_unknown"
        creates = [h for h in wire.hits if h == ("POST", "/v1/batches")]
        assert len(creates) == 1


# ---- the deferred lane: single gateway calls through the batch APIs --------------------------

LOCAL_MODEL = """
[[models]]
name = "local"
provider = "openai_compatible"
input_usd_per_mtok = 0.06
output_usd_per_mtok = 0.06

[[classes]]
match = "nightly_report"
lane = "batch"

[[classes]]
match = "offpeak_report"
lane = "batch"
lane_off_peak = true
off_peak_window = "{window}"
lane_timezone = "Europe/Berlin"
"""


def lane_policy(window: str = "22:00-06:00") -> str:
    return POLICY + LOCAL_MODEL.replace("{window}", window)


@asynccontextmanager
async def deferred_app(
    database_url: str, wire: BatchWire, window: str = "22:00-06:00", **overrides: object
) -> AsyncIterator[tuple[LaneService, httpx.AsyncClient]]:
    engine = make_engine(database_url)
    await apply(session_factory(engine), parse_policy(lane_policy(window)))
    await engine.dispose()
    async with (
        lane_app(database_url, wire, apply_policy=False, **overrides) as svc,
        httpx.AsyncClient(base_url=svc.url) as http,
    ):
        yield svc, http


def chat(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


BATCH_LANE = {"x-tierwise-lane": "batch"}


async def test_a_deferred_call_waits_for_the_max_wait_then_goes_and_its_answer_is_at_its_url(
    database_url: str, wire: BatchWire
) -> None:
    async with deferred_app(database_url, wire) as (svc, http):
        reply = await http.post(
            "/v1/chat/completions", json=chat("tierwise/classify", "one"), headers=BATCH_LANE
        )
        assert reply.status_code == 202
        body = reply.json()
        assert reply.headers["location"] == body["result_url"] == f"/v1/batches/{body['id']}/result"
        assert reply.headers["x-tierwise-task-class"] == "classify"
        pending = await http.get(body["result_url"])
        assert (pending.status_code, pending.json()["status"]) == (202, "queued")
        assert pending.headers["retry-after"] == "30"

        now = utcnow()
        assert (await svc.lane.submit(now)).submitted == 0  # younger than the max wait
        assert (await svc.lane.submit(now + timedelta(seconds=31))).items_sent == 1
        assert (await svc.lane.poll()).succeeded == 1
        done = await http.get(body["result_url"])
        assert done.status_code == 200
        assert done.json()["choices"][0]["message"]["content"] == "re: one"
        outcome = (await svc.rows(Outcome))[0]
        small = {m.name: m for m in parse_policy(POLICY).spec.models}["small"]
        assert outcome.cost_nusd == cost_nusd(
            Usage(input_tokens=100, output_tokens=10), small, discount=Decimal("0.5")
        )
        assert len(await svc.rows(Decision)) == 1


async def test_deferred_calls_of_one_model_go_together_once_the_flush_size_is_reached(
    database_url: str, wire: BatchWire
) -> None:
    async with deferred_app(database_url, wire, lane_flush_size=3) as (svc, http):
        for i in range(2):
            r = await http.post(
                "/v1/chat/completions", json=chat("tierwise/classify", f"q{i}"), headers=BATCH_LANE
            )
            assert r.status_code == 202
        # A class on lane "batch" in the policy is deferred without the header.
        r = await http.post("/v1/chat/completions", json=chat("tierwise/nightly_report", "q2"))
        assert r.status_code == 202
        nightly = (await svc.rows(LaneItem))[-1]
        run = await svc.lane.submit()
        assert (run.submitted, run.items_sent) == (1 if nightly.model == "small" else 2, 3)
        # The header can also keep a batch-lane class real-time: it is answered now (the
        # batch wire serves no chat calls, so the attempt fails upstream: 5xx, not 202).
        realtime = await http.post(
            "/v1/chat/completions",
            json=chat("tierwise/nightly_report", "now"),
            headers={"x-tierwise-lane": "realtime"},
        )
        assert realtime.status_code != 202
        bad = await http.post(
            "/v1/chat/completions",
            json=chat("tierwise/classify", "x"),
            headers={"x-tierwise-lane": "slow"},
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["field"] == "x-tierwise-lane"


async def test_an_off_peak_class_waits_for_its_window_to_open(
    database_url: str, wire: BatchWire
) -> None:
    berlin = zone("Europe/Berlin")
    now = utcnow().astimezone(berlin)
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    window = f"{start:%H:%M}-{end:%H:%M}"
    async with deferred_app(database_url, wire, window) as (svc, http):
        r = await http.post("/v1/chat/completions", json=chat("tierwise/offpeak_report", "late"))
        assert r.status_code == 202
        opens = r.json()["not_before"]
        assert opens is not None
        expected = next_open(utcnow(), parse_window(window), berlin)
        assert abs(opens - expected.timestamp()) < 61
        at_open = datetime.fromtimestamp(opens, UTC)
        assert (await svc.lane.submit(at_open - timedelta(minutes=1))).submitted == 0
        assert (await svc.lane.submit(at_open + timedelta(seconds=31))).items_sent == 1


async def test_a_deferred_call_that_could_never_be_sent_is_refused_at_once(
    database_url: str, wire: BatchWire
) -> None:
    async with deferred_app(database_url, wire) as (svc, http):
        r = await http.post("/v1/chat/completions", json=chat("local", "x"), headers=BATCH_LANE)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["field"] == "model"
        assert "local" in error["message"]
        assert await svc.rows(LaneItem) == []
        assert await svc.rows(Decision) == []
        stream = await http.post(
            "/v1/chat/completions",
            json={**chat("tierwise/classify", "x"), "stream": True},
            headers=BATCH_LANE,
        )
        assert (stream.status_code, stream.json()["error"]["field"]) == (400, "stream")


async def test_a_failed_deferred_call_answers_its_error_and_a_file_batch_has_no_result_url(
    database_url: str, wire: BatchWire
) -> None:
    def refused(lines: Lines) -> tuple[str, Lines | None, Lines | None]:
        error = {
            "id": "r",
            "custom_id": lines[0]["custom_id"],
            "response": None,
            "error": {"code": "invalid_request", "message": "nope"},
        }
        return "completed", None, [error]

    wire.openai_outcome = refused
    async with deferred_app(database_url, wire, lane_flush_size=1) as (svc, http):
        r = await http.post(
            "/v1/chat/completions", json=chat("tierwise/classify", "x"), headers=BATCH_LANE
        )
        await svc.lane.submit()
        assert (await svc.lane.poll()).failed == 1
        failed = await http.get(r.json()["result_url"])
        assert failed.status_code == 502
        assert failed.json()["error"]["code"] == "upstream_error"
        file_batch = await svc.create([line("a", "tierwise/classify", "x")])
        refused_url = await http.get(f"/v1/batches/{file_batch}/result")
        assert (refused_url.status_code, refused_url.json()["error"]["field"]) == (400, "batch_id")


@pytest.mark.parametrize(
    ("utc", "inside_window", "opens"),
    [
        # Spring forward (2026-03-29, 02:00 CET -> 03:00 CEST): 04:30 UTC is 06:30 local, out
        # of 22:00-06:00 (a fixed +01:00 would say 05:30, in); it opens again at 20:00 UTC.
        ("2026-03-29T04:30:00+00:00", False, "2026-03-29T20:00:00+00:00"),
        ("2026-03-29T03:30:00+00:00", True, "2026-03-29T03:30:00+00:00"),
        # Fall back (2026-10-25, 03:00 CEST -> 02:00 CET): 04:30 UTC is 05:30 local, in (a
        # fixed +02:00 would say 06:30, out).
        ("2026-10-25T04:30:00+00:00", True, "2026-10-25T04:30:00+00:00"),
        ("2026-10-25T05:30:00+00:00", False, "2026-10-25T21:00:00+00:00"),
        # Winter evening: 22:00 CET is 21:00 UTC.
        ("2026-12-01T20:59:00+00:00", False, "2026-12-01T21:00:00+00:00"),
    ],
)
def test_the_off_peak_window_follows_daylight_saving_changes(
    utc: str, inside_window: bool, opens: str
) -> None:
    window, berlin = parse_window("22:00-06:00"), zone("Europe/Berlin")
    at = datetime.fromisoformat(utc)
    assert inside(at, window, berlin) is inside_window
    assert next_open(at, window, berlin) == datetime.fromisoformat(opens)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("off_peak_window", "25:00-06:00"),
        ("off_peak_window", "06:00-06:00"),
        ("lane_timezone", "Mars/Olympus"),
        ("lane", "later"),
    ],
)
def test_bad_lane_settings_are_refused_naming_the_key(setting: str, value: str) -> None:
    text = POLICY + f'\n[[classes]]\nmatch = "x"\n{setting} = "{value}"\n'
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert setting in str(caught.value)


async def test_a_deferred_calls_webhook_gets_its_result_once_and_unlisted_hosts_are_refused(
    database_url: str, wire: BatchWire
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        received.append(await request.json())
        # The first delivery fails: it is tried again at the next poll.
        return Response(status_code=503 if len(received) == 1 else 204)

    receiver = FastAPI()
    receiver.add_api_route("/hook", hook, methods=["POST"])
    async with (
        served(receiver) as hook_url,
        deferred_app(database_url, wire, lane_flush_size=1, lane_webhook_hosts=["127.0.0.1"]) as (
            svc,
            http,
        ),
    ):
        r = await http.post(
            "/v1/chat/completions",
            json=chat("tierwise/classify", "hooked"),
            headers={**BATCH_LANE, "x-tierwise-webhook": f"{hook_url}/hook"},
        )
        assert r.status_code == 202
        await svc.lane.submit()
        assert (await svc.lane.poll()).webhooks == 0  # answered 503: still pending
        assert (await svc.lane.poll()).webhooks == 1
        assert (await svc.lane.poll()).webhooks == 0  # delivered once
        assert len(received) == 2
        assert received[1]["id"] == r.json()["id"]
        assert received[1]["status_code"] == 200
        assert received[1]["body"]["choices"][0]["message"]["content"] == "re: hooked"
        refused = await http.post(
            "/v1/chat/completions",
            json=chat("tierwise/classify", "x"),
            headers={**BATCH_LANE, "x-tierwise-webhook": "http://169.254.169.254/latest"},
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["field"] == "x-tierwise-webhook"
        assert len(await svc.rows(LaneItem)) == 1  # nothing of the refused call was kept


async def test_a_line_the_routed_provider_cannot_express_is_refused_at_create(
    svc: LaneService,
) -> None:
    rows = [line("ok", "tierwise/classify", "x"), line("n2", "tierwise/summarize", "y", n=2)]
    uploaded = await svc.client.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        await svc.client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["field"].startswith("line 2: body.")
    assert "anthropic" in error["message"]
    assert await svc.rows(LaneItem) == []


async def test_a_line_with_a_raw_line_separator_in_a_string_is_one_line(svc: LaneService) -> None:
    data = json.dumps(line("a", "tierwise/classify", "one\u2028two"), ensure_ascii=False) + "\n"
    uploaded = await svc.client.files.create(file=("in.jsonl", data.encode()), purpose="batch")
    batch = await svc.client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.request_counts is not None and batch.request_counts.total == 1


async def test_two_pollers_book_each_answer_once(database_url: str, wire: BatchWire) -> None:
    async with (
        lane_app(database_url, wire) as one,
        lane_app(database_url, wire, apply_policy=False) as two,
    ):
        batch_id = await one.create(MIXED)
        await one.lane.submit()
        runs = await asyncio.gather(one.lane.poll(), two.lane.poll())
        assert sum(r.succeeded for r in runs) == 4
        assert sum(r.finished for r in runs) == 1
        assert len(await one.rows(Outcome)) == 4
        batch = await one.client.batches.retrieve(batch_id)
        assert batch.status == "completed"


async def test_a_line_missing_from_an_ended_batch_is_reported_not_sent_again(
    database_url: str, wire: BatchWire
) -> None:
    def drops_last(lines: Lines) -> tuple[str, Lines | None, Lines | None]:
        return "completed", [openai_ok(ln["custom_id"], "ok", 5, 1) for ln in lines[:-1]], None

    wire.openai_outcome = drops_last
    async with lane_app(database_url, wire) as svc:
        batch_id = await svc.create([line(f"c{i}", "tierwise/classify", f"q{i}") for i in range(2)])
        await svc.lane.submit()
        run = await svc.lane.poll()
        assert (run.succeeded, run.failed, run.requeued) == (1, 1, 0)
        assert (await svc.lane.submit()).submitted == 0  # never sent twice (it may have run)
        batch = await svc.client.batches.retrieve(batch_id)
        errors = await svc.output(batch.error_file_id)
        assert [e["custom_id"] for e in errors] == ["c1"]


async def test_a_deferred_call_with_a_taken_request_id_or_a_bad_webhook_is_refused(
    database_url: str, wire: BatchWire
) -> None:
    async with deferred_app(database_url, wire, lane_webhook_hosts=["127.0.0.1"]) as (svc, http):
        headers = {**BATCH_LANE, "x-tierwise-request-id": "request-0001"}
        first = await http.post(
            "/v1/chat/completions", json=chat("tierwise/classify", "x"), headers=headers
        )
        assert first.status_code == 202
        again = await http.post(
            "/v1/chat/completions", json=chat("tierwise/classify", "x"), headers=headers
        )
        assert again.status_code == 409
        assert again.json()["error"]["field"] == "x-tierwise-request-id"
        bad_port = await http.post(
            "/v1/chat/completions",
            json=chat("tierwise/classify", "y"),
            headers={**BATCH_LANE, "x-tierwise-webhook": "http://127.0.0.1:99999/x"},
        )
        assert (bad_port.status_code, bad_port.json()["error"]["field"]) == (
            400,
            "x-tierwise-webhook",
        )
        assert len(await svc.rows(LaneItem)) == 1
