"""Shadow probes: an escalated class keeps being measured by the cheaper model's answers, obtained
by the grading job, so it can come back down (docs/escalation.md, "the way back")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator import replay
from evaluator.datasets import HeldOutSet, load_held_out
from evaluator.escalation import class_state, override_class, run_escalation, window_counts
from evaluator.grading import SHADOW_FRACTION, grade_pending, shadow_model
from evaluator.models import Grade
from evaluator.service import provider_env
from router.db import utcnow
from router.models import Decision, Outcome, RoutingEntry, Sample, TaskClass
from router.policy import ModelPrice
from router.pricing import Usage, cost_nusd
from router.providers.base import ChatRequest, ChatResponse, Provider
from router.sampling import is_sampled
from router.tokens import estimate_message_tokens, estimate_text_tokens
from tests.conftest import DATASETS, apply, policy_named, running_service
from tests.seeding import add_samples

pytestmark = pytest.mark.asyncio

MIXTRAL, GPT4 = "mixtral-8x7b-instruct", "gpt-4-1106-preview"
MATH = "mt_bench.math"


def only(held_out: HeldOutSet, task_type: str) -> HeldOutSet:
    return HeldOutSet(
        held_out.name, held_out.path, [i for i in held_out.items if i.task_type == task_type]
    )


async def test_an_escalated_class_is_probed_by_the_cheaper_model(database_url: str) -> None:
    """Replay MT-Bench math until it escalates to GPT-4 (its reference model), then send more:
    that traffic is sampled and graded as shadow probes of Mixtral, with Mixtral's recorded judge
    scores, the cheaper call in the cost, and nothing in GPT-4's own window."""
    math = only(load_held_out(DATASETS / "mt_bench.jsonl"), MATH)
    items = {i.id: i for i in math.items}
    async with running_service(database_url, "replay") as svc:
        first = replay.plan([math], per_class=1200, seed=3)
        await replay.run(svc.client, svc.router, svc.evaluator, first, tick=300)
        assert [e["to_model"] for e in (await svc.client.get("/v1/escalations")).json()] == [GPT4]
        more = replay.plan([math], per_class=600, seed=4)
        await replay.run(svc.client, svc.router, svc.evaluator, more, tick=600)

        async with svc.sessions() as session:
            entry = await session.get(RoutingEntry, MATH)
            assert entry is not None and (entry.model, entry.status) == (GPT4, "escalated")
            since = entry.changed_at
            later = (
                await session.exec(select(Decision).where(col(Decision.created_at) >= since))
            ).all()
            rows = (
                await session.exec(
                    select(Grade, Sample.item_id).join(
                        Sample, col(Sample.decision_id) == col(Grade.decision_id)
                    )
                )
            ).all()
            own = await window_counts(session, MATH, GPT4, since)
            outcomes = (await session.exec(select(func.count()).select_from(Outcome))).one()

        # Routing: on its reference model, the escalated class is sampled at its rate (5%).
        assert later and all(d.model == GPT4 for d in later)
        assert [d.sampled for d in later] == [is_sampled(d.id, 0.05) for d in later]
        graded = [(g, str(item_id)) for g, item_id in rows]
        shadow = [(g, item_id) for g, item_id in graded if g.shadow]
        assert len(shadow) == sum(d.sampled for d in later) > 0
        # Grading: every sample on GPT-4 is a shadow probe of Mixtral, judged by GPT-4 with the
        # recorded judgment of Mixtral's recorded answer.
        normal = {item_id: g for g, item_id in graded if not g.shadow}
        assert all(g.model == MIXTRAL for g in normal.values())  # before the escalation
        twins = 0
        for g, item_id in shadow:
            item = items[item_id]
            recorded = item.outputs[MIXTRAL]
            assert recorded.judge is not None and recorded.text is not None
            assert recorded.judge.score is not None
            assert (g.model, g.reference_model, g.decided_at >= since) == (MIXTRAL, GPT4, True)
            assert g.verdict == ("disagree" if recorded.judge.score < 7 else "agree")
            # The cost adds Mixtral's answer at Mixtral's price to the judge call: the same judge
            # call a normal grade of that item made (same prompt, same recorded judgment).
            cheap = Usage(
                input_tokens=estimate_message_tokens(item.messages),
                output_tokens=estimate_text_tokens(recorded.text),
            )
            cheap_nusd = cost_nusd(cheap, _model(MIXTRAL))
            assert cheap_nusd is not None and cheap_nusd > 0
            twin = normal.get(item_id)
            if twin is None:  # this item was not sampled before the escalation
                continue
            twins += 1
            assert g.input_tokens == twin.input_tokens + cheap.input_tokens
            assert g.output_tokens == twin.output_tokens + cheap.output_tokens
            assert twin.cost_nusd is not None and g.cost_nusd is not None
            assert g.cost_nusd == twin.cost_nusd + cheap_nusd  # exact: whole nano-USD
        assert twins > 0
        # No outcome was created by a probe: one per request sent.
        assert outcomes == 1200 + 600
        # The escalated model's own window stays empty; the way back sees exactly the probes.
        assert own == {}
        quality = (await svc.client.get(f"/v1/classes/{MATH}/quality")).json()
        assert (quality["model"], quality["status"], quality["n_graded"]) == (GPT4, "escalated", 0)
        k = sum(g.verdict == "disagree" for g, _ in shadow)
        n = sum(g.verdict in ("agree", "disagree") for g, _ in shadow)
        assert (quality["rule_state"]["dn"], quality["rule_state"]["dk"]) == (n, k)
        # Mixtral still fails math: the class stays up.
        assert (await svc.evaluator.escalate()).returned == []


class CheapModelAnswersWell(Provider):
    """A scripted provider: Mixtral answers "4", the GPT-4 judge rates any answer 9 of 10."""

    name = "scripted"
    supports_structured_output = False

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls.append(request.model)
        text = "4" if request.model == MIXTRAL else "Sound answer.\n\nRating: [[9]]"
        return ChatResponse(
            text=text,
            model=request.model,
            finish_reason="stop",
            usage=Usage(input_tokens=100, output_tokens=10),
        )


async def _queue_samples(
    sessions: async_sessionmaker[AsyncSession], n: int, at: datetime, tag: str
) -> None:
    """``n`` queued samples of GPT-4 answers to "2+2?" in the math class, decided at ``at``."""
    ids = [f"probe-{tag}-{i}" for i in range(n)]
    async with sessions() as session:
        add_samples(
            session,
            ids,
            task_class=MATH,
            model=GPT4,
            at=at,
            messages=[{"role": "user", "content": "What is 2+2?"}],
            output_text="4",
        )
        await session.commit()


async def test_shadow_agreement_brings_the_class_back(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The cheaper model answers well: its shadow verdicts (agree) feed the way back, which
    returns the class to Mixtral on probation after K = 3 windows."""
    await apply(sessions, policy_named("replay"))
    async with sessions() as session:
        session.add(TaskClass(name=MATH))  # routed once, so the class registry knows it
        await session.commit()
    async with sessions() as session:
        await override_class(session, MATH, model=GPT4, actor="test", reason="escalate it")
        await session.commit()
    provider = CheapModelAnswersWell()
    env = provider_env(lambda _model: provider)
    now = datetime.now(UTC)
    returned = []
    for day in range(4):
        await _queue_samples(sessions, 600, utcnow() + timedelta(seconds=1), f"d{day}")
        graded = await grade_pending(sessions, env)
        assert (graded.graded, graded.verdicts) == (600, {"agree": 600})
        if day == 0:
            # Every grade is a shadow probe: one Mixtral answer and one GPT-4 judgment each.
            assert provider.calls.count(MIXTRAL) == provider.calls.count(GPT4) == 600
            async with sessions() as session:
                grades = (await session.exec(select(Grade))).all()
                state = await class_state(session, MATH, now=now + timedelta(hours=1))
            assert {(g.model, g.shadow, g.verdict) for g in grades} == {(MIXTRAL, True, "agree")}
            mixtral, gpt4 = (
                cost_nusd(Usage(input_tokens=100, output_tokens=10), _model(m))
                for m in (MIXTRAL, GPT4)
            )
            assert mixtral is not None and gpt4 is not None
            assert [g.cost_nusd for g in grades] == [mixtral + gpt4] * 600
            assert {(g.input_tokens, g.output_tokens) for g in grades} == {(200, 20)}
            # The way-back statistic counts them; GPT-4's own window holds none.
            assert (state.cheaper, state.state.dn, state.state.dk) == (MIXTRAL, 600, 0)
            assert state.decision.estimate.n == 0 and state.state.d > 0
        run = await run_escalation(sessions, now=now + timedelta(days=day, hours=1))
        returned.append(run.returned)
    assert returned == [[], [], [], [MATH]]
    async with sessions() as session:
        back = await session.get(RoutingEntry, MATH)
    assert back is not None and (back.model, back.status) == (MIXTRAL, "probation")


def _model(name: str) -> ModelPrice:
    return next(m for m in policy_named("replay").spec.models if m.name == name)


async def test_which_samples_are_shadow_probes() -> None:
    """Escalated on the reference model: every sample; escalated below it: a deterministic half
    by the salted hash of the decision id; baseline, probation, pinned, or a sample of another
    model than the class's current one: none; at the bottom of the ladder: none."""
    policy = policy_named("default")  # ladder gpt-4o-mini < claude-3-5-haiku < claude-3-5-sonnet
    mini, haiku, sonnet = policy.spec.ladder

    def entry(model: str, status: str) -> RoutingEntry:
        return RoutingEntry(
            task_class="classify", tier="standard", model=model, status=status, version=2
        )

    def sample(model: str, i: int) -> Sample:
        return Sample(
            decision_id=f"d-{i}",
            task_class="classify",
            model=model,
            input_messages=[],
            output_text="",
            decided_at=utcnow(),
        )

    ids = range(4000)
    assert all(
        shadow_model(policy, sample(sonnet, i), entry(sonnet, "escalated")) == haiku for i in ids
    )
    split = [shadow_model(policy, sample(haiku, i), entry(haiku, "escalated")) for i in ids]
    assert set(split) == {mini, None}
    assert sum(s == mini for s in split) / len(split) == pytest.approx(SHADOW_FRACTION, abs=0.03)
    assert split == [shadow_model(policy, sample(haiku, i), entry(haiku, "escalated")) for i in ids]
    for status in ("baseline", "probation", "pinned"):
        assert {shadow_model(policy, sample(sonnet, i), entry(sonnet, status)) for i in ids} == {
            None
        }
    assert shadow_model(policy, sample(mini, 1), entry(sonnet, "escalated")) is None
    assert shadow_model(policy, sample(mini, 1), entry(mini, "escalated")) is None
    assert shadow_model(policy, sample(mini, 1), None) is None
