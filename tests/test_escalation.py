"""The escalation job with the sequential rule, on SQLite and Postgres: one ladder step at a time,
an event with evidence for every change, the judge-calibration gate, the way back through
probation, pinned classes, and the operators' API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation import run_escalation
from evaluator.models import EscalationEvent, JobRun, RuleStateRow
from evaluator.sequential import RuleState
from router.models import RoutingEntry
from router.policy import builtin_policy_path, parse_policy
from tests.conftest import apply, running_service
from tests.seeding import seed_grades

pytestmark = pytest.mark.asyncio

# The default policy with a mechanical grader for classify (a judge-graded class needs a
# calibrated judge to move: evaluator.calibration.may_escalate).
POLICY = parse_policy(
    builtin_policy_path("default").read_text(encoding="utf-8")
    + '\n[[classes]]\nmatch = "classify*"\ngrader = "exact"\n',
    source="test policy",
)
MINI, HAIKU, SONNET = "gpt-4o-mini", "claude-3-5-haiku", "claude-3-5-sonnet"


async def entry(sessions: async_sessionmaker[AsyncSession], task_class: str) -> RoutingEntry:
    async with sessions() as session:
        row = await session.get(RoutingEntry, task_class)
        assert row is not None
        return row


async def events(sessions: async_sessionmaker[AsyncSession]) -> list[EscalationEvent]:
    async with sessions() as session:
        return list(
            (await session.exec(select(EscalationEvent).order_by(col(EscalationEvent.id)))).all()
        )


async def test_escalation_climbs_the_ladder_one_step_at_a_time(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, POLICY)
    start = (await entry(sessions, "classify")).changed_at
    await seed_grades(sessions, "classify", MINI, n=400, k=20)  # 20 of 400: escalates
    run = await run_escalation(sessions)
    assert run.escalated == ["classify"]
    first = await entry(sessions, "classify")
    assert (first.model, first.status) == (HAIKU, "escalated")

    [event] = await events(sessions)
    assert (event.from_model, event.to_model, event.to_status) == (MINI, HAIKU, "escalated")
    assert (event.actor, event.n, event.k, event.window_start) == ("escalation-job", 400, 20, start)
    assert (round(event.ci_low or 0, 3), round(event.ci_high or 0, 3)) == (0.033, 0.076)
    assert event.rule.startswith("bernoulli-cusum(p0=0.02, p1=0.05")
    assert event.evidence is not None and event.evidence["action"] == "escalate"
    assert RuleState.from_dict(event.evidence["state"]).n == 400

    # Nothing new: nothing happens, however often the job runs.
    for _ in range(3):
        assert (await run_escalation(sessions)).escalated == []
    # The next model is watched from a fresh window and climbs one more step.
    await seed_grades(sessions, "classify", HAIKU, n=400, k=20)
    assert (await run_escalation(sessions)).escalated == ["classify"]
    assert (await entry(sessions, "classify")).model == SONNET
    await seed_grades(sessions, "classify", SONNET, n=400, k=20)
    assert (await run_escalation(sessions)).at_top == ["classify"]
    assert [e.to_model for e in await events(sessions)] == [HAIKU, SONNET]


async def test_a_fresh_class_is_not_escalated_on_inconclusive_evidence(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, POLICY)
    await seed_grades(sessions, "classify", MINI, n=100, k=5)  # 5 of 100: not yet conclusive
    run = await run_escalation(sessions)
    assert run.escalated == []
    async with sessions() as session:
        row = await session.get(RuleStateRow, "classify")
    assert row is not None and row.action == "not_conclusive"
    assert RuleState.from_dict(row.state).n == 100
    # The state counts each verdict once: 15 more of 300 make 20/400 -> escalate.
    await seed_grades(sessions, "classify", MINI, n=300, k=15)
    assert (await run_escalation(sessions)).escalated == ["classify"]


async def test_an_uncalibrated_judge_cannot_move_a_class(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, POLICY)  # summarize: judge_single, no judge_kappa
    await seed_grades(sessions, "summarize", HAIKU, n=400, k=40)
    run = await run_escalation(sessions)
    assert (run.escalated, run.blocked) == ([], ["summarize"])
    assert (await entry(sessions, "summarize")).model == HAIKU
    assert await events(sessions) == []


async def test_the_way_back_needs_k_windows_then_probation(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, POLICY)
    await seed_grades(sessions, "classify", MINI, n=400, k=20)
    assert (await run_escalation(sessions)).escalated == ["classify"]
    now = datetime.now(UTC)
    # Shadow probes of the cheaper model (gpt-4o-mini) at 0% disagreement, 1000 a day.
    returned = []
    for day in range(4):
        await seed_grades(sessions, "classify", MINI, n=1000, k=0, shadow=True)
        run = await run_escalation(sessions, now=now + timedelta(days=day, hours=1))
        returned.append(run.returned)
    assert returned == [[], [], [], ["classify"]]  # the third window closes on day 3
    back = await entry(sessions, "classify")
    assert (back.model, back.status) == (MINI, "probation")
    # Probation ends after K = 3 windows of 24 h without a new escalation.
    # (The change itself happened at the real clock time, about `now`.)
    early = await run_escalation(sessions, now=now + timedelta(days=2, hours=23))
    assert early.settled == []
    late = await run_escalation(sessions, now=now + timedelta(days=3, hours=1))
    assert late.settled == ["classify"]
    settled = await entry(sessions, "classify")
    assert (settled.model, settled.status) == (MINI, "baseline")
    assert [(e.from_status, e.to_status) for e in await events(sessions)] == [
        ("baseline", "escalated"),
        ("escalated", "probation"),
        ("probation", "baseline"),
    ]


async def test_a_tick_runs_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    await apply(sessions, POLICY)
    await seed_grades(sessions, "classify", MINI, n=400, k=20)
    tick = datetime(2030, 1, 1, 10, tzinfo=UTC)
    first = await run_escalation(sessions, tick=tick, worker="a")
    second = await run_escalation(sessions, tick=tick, worker="b")
    assert (first.escalated, second.skipped, second.duplicate) == (["classify"], True, True)
    async with sessions() as session:
        runs = (await session.exec(select(JobRun))).all()
    assert [(r.worker, r.tick, (r.result or {}).get("escalated")) for r in runs] == [
        ("a", tick, ["classify"])
    ]


# ---- the operators' API ------------------------------------------------------------------------


async def test_pin_unpin_override_over_http(database_url: str) -> None:
    async with running_service(database_url, policy=None) as svc:
        await apply(svc.sessions, POLICY)
        await svc.router.refresh(force=True)
        resp = await svc.client.post(
            "/v1/classes/classify/pin", json={"reason": "incident 42", "actor": "alice"}
        )
        assert resp.status_code == 200, resp.text
        pinned = resp.json()
        assert (pinned["to_status"], pinned["actor"], pinned["reason"]) == (
            "pinned",
            "alice",
            "incident 42",
        )
        assert (
            await svc.client.post("/v1/classes/classify/pin", json={"reason": "again"})
        ).status_code == 409

        # A pinned class is never sampled and never changed by the job.
        await svc.router.refresh(force=True)
        for i in range(60):
            request = {"task_type": "classify", "input_tokens": 5, "request_id": f"request-{i:04d}"}
            body = (await svc.client.post("/v1/route", json=request)).json()
            assert (body["model"], body["sampled"]) == (MINI, False)
        await seed_grades(svc.sessions, "classify", MINI, n=400, k=40)
        assert (await svc.evaluator.escalate()).escalated == []
        assert (await entry(svc.sessions, "classify")).status == "pinned"

        resp = await svc.client.post("/v1/classes/classify/unpin", json={"reason": "over"})
        assert resp.status_code == 200 and resp.json()["to_status"] == "baseline"
        assert (
            await svc.client.post("/v1/classes/classify/unpin", json={"reason": "x"})
        ).status_code == 409

        resp = await svc.client.post(
            "/v1/classes/classify/override", json={"model": SONNET, "reason": "vip", "pin": True}
        )
        assert resp.status_code == 200, resp.text
        assert (resp.json()["to_model"], resp.json()["to_status"]) == (SONNET, "pinned")
        missing = await svc.client.post(
            "/v1/classes/classify/override", json={"model": "gpt-9", "reason": "x"}
        )
        assert (missing.status_code, missing.json()["error"]["field"]) == (404, "model")
        unknown = await svc.client.post("/v1/classes/never-seen/pin", json={"reason": "x"})
        assert unknown.status_code == 404
        bad = await svc.client.post("/v1/classes/classify/pin", json={"reason": ""})
        assert bad.status_code == 422

        history = (await svc.client.get("/v1/escalations?task_class=classify")).json()
        assert [(e["to_status"], e["actor"]) for e in history] == [
            ("pinned", "operator"),
            ("baseline", "operator"),
            ("pinned", "alice"),
        ]
        assert all(e["evidence"]["state"]["v"] == 1 for e in history)


async def test_quality_shows_the_rule_and_why(database_url: str) -> None:
    async with running_service(database_url, policy=None) as svc:
        await apply(svc.sessions, POLICY)
        await seed_grades(svc.sessions, "classify", MINI, n=100, k=5)
        body = (await svc.client.get("/v1/classes/classify/quality")).json()
        assert (body["n_graded"], body["n_disagree"], body["rule_action"]) == (
            100,
            5,
            "not_conclusive",
        )
        assert (round(body["ci_low"], 3), round(body["ci_high"], 3)) == (0.022, 0.112)
        assert body["sprt"] == pytest.approx(1.6278, abs=1e-4)
        assert body["decision_limit"] > body["statistic"] > 0
        assert "not yet proven" in body["reason"] and body["blocked"] is None
        assert body["rule_state"]["n"] == 100
        # Reading the quality writes nothing.
        async with svc.sessions() as session:
            assert await session.get(RuleStateRow, "classify") is None
