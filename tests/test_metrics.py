"""``GET /metrics``: scraped over ASGI (and over HTTP for the gateway) after real traffic, parsed
with prometheus-client's own parser, every counter checked against what was sent and what the
database holds (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import func, select

from evaluator.models import EscalationEvent, Grade
from router.jobs import Job, JobScheduler
from router.keys import create_key
from router.metrics import Metrics
from router.models import Outcome, Sample
from tests.conftest import Service, running_service
from tests.test_gateway import HELLO, Gateway, gateway_on
from tests.test_outcomes import outcome
from tests.wire import OPENAI_PATH, Reply, error_reply, openai_chat, openai_stream, openai_usage

pytestmark = pytest.mark.asyncio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (sample name, sorted labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(resp.text)


async def test_route_and_outcome_traffic_is_counted_exactly(service: Service) -> None:
    shapes = [("classify", 120)] * 3 + [("code_generation", 4000)] * 2
    decisions = []
    for i, (task_type, tokens) in enumerate(shapes):
        resp = await service.client.post(
            "/v1/route",
            json={"task_type": task_type, "input_tokens": tokens, "request_id": f"metrics-{i:04d}"},
        )
        assert resp.status_code == 200, resp.text
        decisions.append(resp.json())
    before = await scrape(service.client)
    # Nothing written yet (the writer flushes every 50 ms in tests, so this may be 0 or 5).
    assert value(before, "tierwise_writer_buffered_rows") in {0.0, 5.0}
    await service.router.flush()

    reported = [outcome(decisions[0]["decision_id"]), outcome(decisions[1]["decision_id"])]
    resp = await service.client.post("/v1/outcomes", json=reported)
    assert resp.status_code == 200 and resp.json()["stored"] == 2
    # The same report again is a duplicate: stored once, counted once.
    resp = await service.client.post("/v1/outcomes", json=reported[0])
    assert resp.json()["duplicates"] == 1
    # One failed call, unpriced.
    resp = await service.client.post(
        "/v1/outcomes",
        json={"decision_id": decisions[2]["decision_id"], "served_model": "x", "status": "error"},
    )
    assert resp.status_code == 200, resp.text

    got = await scrape(service.client)
    by_model: dict[tuple[str, str], int] = {}
    for d in decisions:
        by_model[d["task_class"], d["model"]] = by_model.get((d["task_class"], d["model"]), 0) + 1
    assert by_model[("classify", "gpt-4o-mini")] == 3
    for (task_class, model), n in by_model.items():
        assert value(got, "tierwise_decisions_total", task_class=task_class, model=model) == n
    sampled = sum(d["sampled"] for d in decisions if d["task_class"] == "classify")
    assert value(got, "tierwise_decisions_sampled_total", task_class="classify") == (
        sampled or None
    )
    assert value(got, "tierwise_outcomes_total", source="api", status="ok") == 2
    assert value(got, "tierwise_outcomes_total", source="api", status="error") == 1
    async with service.sessions() as session:
        nusd = (await session.exec(select(func.sum(Outcome.cost_nusd)))).one()
        by_status = dict(
            (await session.exec(select(Sample.status, func.count()).group_by(Sample.status))).all()
        )
    assert nusd is not None and nusd > 0
    assert value(got, "tierwise_outcome_cost_usd_total", source="api") == int(nusd) / 1e9
    # Samples, read from the database at the scrape: the sampled ones among the two reported.
    queued = sum(d["sampled"] for d in decisions[:2])
    assert by_status.get("queued", 0) == queued
    assert value(got, "tierwise_samples", status="queued") == (queued or None)
    assert value(got, "tierwise_writer_buffered_rows") == 0


async def test_grading_spend_and_escalations_are_read_from_the_database(
    service: Service,
) -> None:
    # Rows as the grading and escalation jobs write them, and the scrape reads them back.
    ids = []
    for i in range(3):
        resp = await service.client.post(
            "/v1/route",
            json={"task_type": "classify", "input_tokens": 10, "request_id": f"spend-{i:04d}"},
        )
        ids.append(resp.json()["decision_id"])
    await service.router.flush()
    now = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    async with service.sessions() as session:
        for i, decision_id in enumerate(ids):
            session.add(
                Sample(
                    decision_id=decision_id,
                    task_class="classify",
                    model="gpt-4o-mini",
                    input_messages=[],
                    output_text="x",
                    status="graded" if i else "failed",
                    decided_at=now,
                )
            )
        await session.flush()
        for decision_id, cost in zip(ids[1:], (1_250_000_001, 3), strict=True):
            session.add(
                Grade(
                    decision_id=decision_id,
                    task_class="classify",
                    model="gpt-4o-mini",
                    reference_model="gpt-4o",
                    grader="exact",
                    verdict="agree",
                    parse_status="ok",
                    cost_nusd=cost,
                    decided_at=now,
                )
            )
        session.add(
            EscalationEvent(
                task_class="classify",
                from_model="gpt-4o-mini",
                to_model="gpt-4o",
                from_status="baseline",
                to_status="escalated",
                actor="test",
                reason="r",
                rule="r",
                n=30,
                k=5,
                rate=5 / 30,
                ci_low=0.0,
                ci_high=0.3,
                threshold=0.03,
                confidence=0.95,
                table_version=1,
                window_start=now,
            )
        )
        await session.commit()
    got = await scrape(service.client)
    assert value(got, "tierwise_samples", status="graded") == 2
    assert value(got, "tierwise_samples", status="failed") == 1
    assert value(got, "tierwise_grading_spend_usd", task_class="classify") == 1.250000004
    assert (
        value(got, "tierwise_escalation_events", task_class="classify", to_status="escalated") == 1
    )


async def test_gateway_latency_errors_and_fallbacks(database_url: str) -> None:
    gw: Gateway
    async with gateway_on(database_url) as gw:
        # 1: "small" answers 503, its fallback "other" answers.
        gw.wire.enqueue(
            OPENAI_PATH,
            error_reply(OPENAI_PATH, 503),
            Reply(body=openai_chat("spam", usage=openai_usage(10, 2))),
        )
        await gw.client.chat.completions.create(model="tierwise/classify", messages=HELLO)
        # 2: streamed, answered by "small" at once.
        gw.wire.enqueue(
            OPENAI_PATH, Reply(events=openai_stream(["sp", "am"], usage=openai_usage(10, 2)))
        )
        stream = await gw.client.chat.completions.create(
            model="tierwise/classify", messages=HELLO, stream=True
        )
        async for _ in stream:
            pass
        await asyncio.sleep(0.05)  # the relay records the outcome once the stream has ended
        async with httpx.AsyncClient(base_url=gw.url) as client:
            got = await scrape(client)
    count = "tierwise_gateway_request_duration_seconds_count"
    assert value(got, count, status="ok") == 2
    assert value(got, "tierwise_gateway_time_to_first_token_seconds_count") == 1
    assert value(got, "tierwise_upstream_errors_total", model="small", kind="5xx") == 1
    assert value(got, "tierwise_gateway_fallbacks_total", from_model="small") == 1
    assert value(got, "tierwise_decisions_total", task_class="classify", model="small") == 2
    assert value(got, "tierwise_outcomes_total", source="gateway", status="ok") == 2


async def test_two_apps_in_one_process_keep_their_own_counts(database_url: str) -> None:
    async with (
        running_service(database_url) as one,
        running_service(database_url, policy=None) as two,
    ):
        for _ in range(2):
            await one.client.post("/v1/route", json={"task_type": "classify", "input_tokens": 1})
        await two.client.post("/v1/route", json={"task_type": "classify", "input_tokens": 1})
        a, b = await scrape(one.client), await scrape(two.client)
    assert value(a, "tierwise_decisions_total", task_class="classify", model="gpt-4o-mini") == 2
    assert value(b, "tierwise_decisions_total", task_class="classify", model="gpt-4o-mini") == 1


async def test_metrics_need_the_read_samples_scope_once_keys_exist(service: Service) -> None:
    async with service.sessions() as session:
        reader = await create_key(session, "prometheus", ["read-samples"])
        router_only = await create_key(session, "app", ["route"])
        await session.commit()
    await service.app.state.keys.refresh()
    assert (await service.client.get("/metrics")).status_code == 401
    denied = await service.client.get(
        "/metrics", headers={"authorization": f"Bearer {router_only.key}"}
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["field"] == "authorization"
    await scrape(service.client, authorization=f"Bearer {reader.key}")


async def test_job_runs_and_lag_come_from_the_scheduler() -> None:
    ran: list[datetime] = []

    async def ok(tick: datetime) -> object:
        ran.append(tick)
        return None

    async def broken(_tick: datetime) -> object:
        raise RuntimeError("job failed")

    scheduler = JobScheduler([Job("good", ok, 0.05), Job("bad", broken, 0.05)])
    metrics = Metrics()
    metrics.watch_jobs(scheduler)
    scheduler.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            stats = {name: runs for name, _i, runs, _l, _s in scheduler.job_stats()}
            if stats["good"]["ok"] >= 2 and stats["bad"]["error"] >= 2:
                break
    finally:
        await scheduler.aclose()
    got = parse(metrics.render().decode())
    final = {name: (runs, last) for name, _i, runs, last, _s in scheduler.job_stats()}
    assert value(got, "tierwise_job_runs_total", job="good", result="ok") == len(ran)
    assert (
        value(got, "tierwise_job_runs_total", job="bad", result="error") == final["bad"][0]["error"]
    )
    assert value(got, "tierwise_job_runs_total", job="bad", result="ok") == 0
    assert value(got, "tierwise_job_last_success_timestamp_seconds", job="good") == final["good"][1]
    assert value(got, "tierwise_job_last_success_timestamp_seconds", job="bad") is None
    lag: Any = value(got, "tierwise_job_lag_seconds", job="good")
    assert lag is not None and 0 <= lag < 1
