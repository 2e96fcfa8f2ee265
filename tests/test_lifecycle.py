"""The data lifecycle: redaction before text is stored, text retention per class (0 = never
stored), and on PostgreSQL the day partitions of decisions and outcomes (created ahead, the
default partition emptied, old days dropped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.lifecycle import day_partitions, delete_expired_text, maintain_partitions
from evaluator.models import Grade, GradingBatch, GradingBatchItem, JobRun
from router.dialect import insert_ignore
from router.errors import PolicyError
from router.models import Decision, Outcome, Sample
from router.policy import Policy, builtin_policy_path, parse_policy
from router.redaction import Redactor, luhn_ok
from tests.conftest import apply, running_service
from tests.seeding import seed_grades

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def policy_with(extra: str) -> Policy:
    """The default policy with ``extra`` TOML appended (``[[classes]]`` blocks)."""
    return parse_policy(builtin_policy_path("default").read_text(encoding="utf-8") + extra)


# ---- redaction ----------------------------------------------------------------------------------


def test_builtin_patterns_replace_exactly_what_they_name() -> None:
    r = Redactor(["email", "phone", "card"])
    before = (
        "Mail jane.doe+billing@example.co.uk or call +44 20 7946 0958 / (415) 555-2671 / "
        "415.555.2671; card 4111 1111 1111 1111 (also 5500-0000-0000-0004), "
        "order 4111111111111112 of 2024-05-01, ticket 12345678, v1.2.3, a@b"
    )
    assert r.text(before) == (
        "Mail [email] or call [phone] / [phone] / [phone]; card [card] (also [card]), "
        "order 4111111111111112 of 2024-05-01, ticket 12345678, v1.2.3, a@b"
    )


def test_only_the_configured_patterns_apply_and_custom_ones_follow() -> None:
    r = Redactor(["card"], [r"\bACME-\d{6}\b"])
    text = "jane@example.com paid with 378282246310005 for ACME-123456 (not ACME-12)"
    assert r.text(text) == "jane@example.com paid with [card] for [redacted] (not ACME-12)"
    assert not Redactor().active
    assert Redactor().text(text) == text


def test_luhn() -> None:
    assert luhn_ok("79927398713")  # the Luhn check's textbook example
    assert not luhn_ok("79927398710")
    assert luhn_ok("4111111111111111")


def test_every_string_of_the_messages_is_redacted_keys_kept() -> None:
    r = Redactor(["email"])
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "I am bob@example.org"}]},
        {"role": "assistant", "tool_calls": [{"function": {"arguments": '{"to": "x@y.io"}'}}]},
    ]
    assert [r.value(m) for m in messages] == [
        {"role": "user", "content": [{"type": "text", "text": "I am [email]"}]},
        {"role": "assistant", "tool_calls": [{"function": {"arguments": '{"to": "[email]"}'}}]},
    ]


def test_policy_keys_are_validated_naming_the_key() -> None:
    with pytest.raises(PolicyError) as bad:
        policy_with('\n[[classes]]\nmatch = "classify"\nredact_patterns = ["ok", "a("]\n')
    assert "redact_patterns" in str(bad.value)
    assert "[1]: not a regular expression" in str(bad.value)
    with pytest.raises(PolicyError) as bad:
        policy_with('\n[[classes]]\nmatch = "classify"\nredact = ["ssn"]\n')
    assert "redact" in str(bad.value)
    with pytest.raises(PolicyError) as bad:
        policy_with('\n[[classes]]\nmatch = "classify"\ntext_retention_days = -1\n')
    assert "text_retention_days" in str(bad.value)
    assert policy_with("").settings_for("classify").text_retention_days == 30


# ---- what the outcome call stores ---------------------------------------------------------------

CLASSIFY = '\n[[classes]]\nmatch = "classify"\nsample_rate = 1.0\n'


async def _sampled_outcome(database_url: str, policy: Policy, body: dict[str, Any]) -> Any:
    from router.db import make_engine, session_factory

    engine = make_engine(database_url)
    await apply(session_factory(engine), policy)
    await engine.dispose()
    async with running_service(database_url, policy=None) as svc:
        route = await svc.client.post(
            "/v1/route", json={"task_type": "classify", "input_tokens": 40}
        )
        assert route.status_code == 200, route.text
        decision = route.json()
        assert decision["sampled"] is True
        resp = await svc.client.post(
            "/v1/outcomes",
            json={
                "decision_id": decision["decision_id"],
                "served_model": "gpt-4o-mini",
                "usage": {"prompt_tokens": 40, "completion_tokens": 2},
                **body,
            },
        )
        assert resp.status_code == 200, resp.text
        async with svc.sessions() as session:
            samples = (await session.exec(select(Sample))).all()
            outcomes = (await session.exec(select(Outcome))).all()
        return resp.json()["results"][0], samples, outcomes, decision


async def test_text_is_redacted_before_it_is_stored(database_url: str) -> None:
    policy = policy_with(CLASSIFY + 'redact = ["email", "card"]\n')
    result, samples, _, _ = await _sampled_outcome(
        database_url,
        policy,
        {
            "input_messages": [
                {"role": "user", "content": "Refund jane@example.com, card 4111-1111-1111-1111"}
            ],
            "output_text": "refund to jane@example.com",
        },
    )
    assert result["sample_queued"] is True
    [sample] = samples
    assert sample.input_messages == [{"role": "user", "content": "Refund [email], card [card]"}]
    assert sample.output_text == "refund to [email]"
    assert sample.text_deleted_at is None


async def test_a_class_that_keeps_no_text_stores_none(database_url: str) -> None:
    policy = policy_with(CLASSIFY + "text_retention_days = 0\n")
    result, samples, outcomes, decision = await _sampled_outcome(
        database_url,
        policy,
        {"input_messages": [{"role": "user", "content": "q"}], "output_text": "spam"},
    )
    assert result["sample_queued"] is False
    assert result["note"] == (
        "sampled, but the class keeps no text (text_retention_days = 0): not graded"
    )
    assert samples == []
    [outcome] = outcomes  # the outcome itself is kept, priced, with its decision's time
    assert outcome.decision_id == decision["decision_id"]
    assert outcome.cost_nusd is not None


# ---- the text retention job ---------------------------------------------------------------------


async def _seed(
    sessions: async_sessionmaker[AsyncSession], task_class: str, *, n: int, days_ago: float
) -> list[str]:
    at = NOW - timedelta(days=days_ago)
    await seed_grades(sessions, task_class, "gpt-4o-mini", n=n, k=1, decided_at=at)
    async with sessions() as session:
        rows = (
            await session.exec(
                select(Sample).where(
                    col(Sample.task_class) == task_class, col(Sample.decided_at) == at
                )
            )
        ).all()
        for row in rows:
            row.output_text, row.created_at = f"answer of {row.decision_id}", at
        grades = await session.exec(select(Grade).where(col(Grade.task_class) == task_class))
        for grade in grades.all():
            grade.raw_output = "Rating: 3. The answer misses the point."
        await session.commit()
    return sorted(r.decision_id for r in rows)


async def test_text_past_retention_is_deleted_in_batches_and_grades_kept(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, policy_with('\n[[classes]]\nmatch = "short"\ntext_retention_days = 2\n'))
    old = await _seed(sessions, "classify", n=5, days_ago=31)  # default: 30 days
    young = await _seed(sessions, "classify", n=2, days_ago=29)
    short = await _seed(sessions, "short", n=3, days_ago=3)
    async with sessions() as session:
        waiting, leased = old[0], old[1]
        sample = await session.get(Sample, waiting)
        assert sample is not None
        sample.status = "queued"  # never graded: its grade row is the seeder's, text expires
        leased_row = await session.get(Sample, leased)
        assert leased_row is not None
        leased_row.status, leased_row.lease_until = "claimed", NOW + timedelta(minutes=5)
        session.add(
            GradingBatch(id=1, provider="openai", model="m", provider_batch_id="b1", deadline=NOW)
        )
        await session.flush()
        session.add(
            GradingBatchItem(
                batch_id=1,
                custom_id="c1",
                decision_id=old[2],
                stage=1,
                key="reference",
                lease_until=NOW,
                status="answered",
                response={"text": "the reference answer"},
            )
        )
        await session.commit()

    run = await delete_expired_text(sessions, now=NOW, batch_size=2)
    # old: 4 of 5 (one under a live lease waits), short: 3; batches of 2 -> 2 + 2 for the class
    # of 4, then 2 + 1 for short.
    assert (run.deleted, run.expired_ungraded, run.batches, run.more) == (7, 1, 4, False)
    async with sessions() as session:
        samples = {s.decision_id: s for s in (await session.exec(select(Sample))).all()}
        grades = {g.decision_id: g for g in (await session.exec(select(Grade))).all()}
        item = (await session.exec(select(GradingBatchItem))).one()
    gone = sorted({*old, *short} - {leased})
    for did in gone:
        assert (samples[did].input_messages, samples[did].output_text) == ([], "")
        assert samples[did].text_deleted_at == NOW
        assert grades[did].raw_output == ""
        assert grades[did].verdict in ("agree", "disagree")  # the grade stays
    for did in [*young, leased]:
        assert samples[did].output_text == f"answer of {did}"
        assert grades[did].raw_output.startswith("Rating: 3.")
    assert samples[waiting].status == "failed"
    assert samples[leased].status == "claimed"
    assert item.response is None
    # Nothing is due any more; a second run deletes nothing.
    again = await delete_expired_text(sessions, now=NOW, batch_size=2)
    assert (again.deleted, again.batches) == (0, 0)


async def test_a_run_stops_at_its_batch_limit_and_the_next_tick_goes_on(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, policy_with(""))
    await _seed(sessions, "classify", n=5, days_ago=40)
    tick = NOW.replace(minute=0)
    first = await delete_expired_text(
        sessions, now=NOW, batch_size=2, max_batches=2, tick=tick, worker="w1"
    )
    assert (first.deleted, first.more) == (4, True)
    duplicate = await delete_expired_text(sessions, now=NOW, tick=tick, worker="w2")
    assert duplicate.skipped  # one run per tick across workers
    second = await delete_expired_text(
        sessions, now=NOW, batch_size=2, tick=tick + timedelta(hours=1), worker="w2"
    )
    assert (second.deleted, second.more) == (1, False)
    async with sessions() as session:
        runs = (await session.exec(select(JobRun).order_by(col(JobRun.tick)))).all()
    assert [(r.job, r.worker, r.result) for r in runs] == [
        ("text-retention", "w1", {"deleted": 4, "expired_ungraded": 0, "batches": 2, "more": True}),
        (
            "text-retention",
            "w2",
            {"deleted": 1, "expired_ungraded": 0, "batches": 1, "more": False},
        ),
    ]


# ---- partitions ---------------------------------------------------------------------------------


def _decision(did: str, at: datetime) -> Decision:
    return Decision(
        id=did,
        task_type="classify",
        task_class="classify",
        tier="trivial",
        model="gpt-4o-mini",
        provider="openai",
        table_version=1,
        sampled=False,
        input_tokens=10,
        has_tool_calls=False,
        created_at=at,
    )


def _outcome(did: str, at: datetime) -> Outcome:
    return Outcome(
        decision_id=did,
        task_class="classify",
        served_model="gpt-4o-mini",
        status="ok",
        decided_at=at,
        created_at=at + timedelta(seconds=2),
    )


async def _in(session: AsyncSession, table: str, partition: str) -> list[str]:
    key = "id" if table == "decision" else "decision_id"
    conn = await session.connection()
    rows = await conn.execute(sa.text(f"SELECT {key} FROM {partition} ORDER BY 1"))
    return [str(r[0]) for r in rows]


async def test_partitions_are_made_ahead_the_default_emptied_and_old_days_dropped(
    sessions: async_sessionmaker[AsyncSession], backend: str
) -> None:
    if backend != "postgresql":
        run = await maintain_partitions(sessions, now=NOW)
        assert (run.skipped, run.reason) == (True, "not PostgreSQL: tables are not partitioned")
        return
    far = NOW + timedelta(days=40)
    old = NOW - timedelta(days=20)
    async with sessions() as session:
        for did, at in (("far", far), ("old", old), ("now", NOW)):
            session.add(_decision(did, at))
        await session.flush()
        for did, at in (("far", far), ("old", old), ("now", NOW)):
            session.add(_outcome(did, at))
        await session.commit()
        # No partition covers these days yet: every row is in the default partition.
        assert await _in(session, "decision", "decision_default") == ["far", "now", "old"]

    run = await maintain_partitions(sessions, now=NOW, ahead_days=3, retention_days=10)
    days = [NOW.date() + timedelta(days=i) for i in range(4)] + [far.date()]
    assert run.created == {"decision": sorted(days), "outcome": sorted(days)}
    assert run.moved == {"decision": 2, "outcome": 2}  # "now" and "far"; "old" is past retention
    assert run.expired == {"decision": 1, "outcome": 1}
    async with sessions() as session:
        conn = await session.connection()
        have = await day_partitions(conn, "decision")
        assert await _in(session, "decision", "decision_default") == []
        assert await _in(session, "decision", have[NOW.date()]) == ["now"]
        assert await _in(session, "outcome", f"outcome_p{far:%Y%m%d}") == ["far"]
        ids = (await session.exec(select(Decision.id).order_by(col(Decision.id)))).all()
        assert list(ids) == ["far", "now"]
        # An outcome reported again conflicts on (decision_id, decided_at): still one row.
        await conn.execute(
            insert_ignore(session, Outcome).values(
                decision_id="now",
                task_class="classify",
                served_model="gpt-4o-mini",
                status="ok",
                decided_at=NOW,
                created_at=NOW + timedelta(hours=1),
            )
        )
        await session.commit()
        n = (await session.exec(select(sa.func.count()).select_from(Outcome))).one()
        assert n == 2

    # Ten days later the days before the cutoff go whole, "now"'s day among them.
    later = await maintain_partitions(
        sessions, now=NOW + timedelta(days=11), ahead_days=3, retention_days=10
    )
    assert later.dropped["decision"] == [NOW.date()]
    async with sessions() as session:
        ids = (await session.exec(select(Decision.id))).all()
        assert list(ids) == ["far"]
        conn = await session.connection()
        assert NOW.date() not in await day_partitions(conn, "decision")
        assert NOW.date() not in await day_partitions(conn, "outcome")


async def test_one_partition_run_per_tick(
    sessions: async_sessionmaker[AsyncSession], backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("partitions exist on PostgreSQL only")
    at = NOW - timedelta(days=100)  # days no other test makes partitions for
    tick = at.replace(minute=0)
    first = await maintain_partitions(sessions, now=at, tick=tick, worker="w1")
    second = await maintain_partitions(sessions, now=at, tick=tick, worker="w2")
    assert not first.skipped
    assert (second.skipped, second.reason) == (True, "another worker runs this tick")


async def test_the_lifecycle_jobs_are_scheduled(database_url: str) -> None:
    async with running_service(database_url, "default") as svc:
        from tierwise.planes import jobs_of

        names = [j.name for j in jobs_of(svc.app.state.settings, svc.evaluator, svc.app.state.lane)]
    assert names[-2:] == ["text-retention", "partitions"]


async def test_a_decision_id_stored_on_another_day_is_not_stored_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A retried call's decision id (derived from its request id) a day later: on PostgreSQL
    the primary key (id, created_at) would not conflict, the insert skips it anyway."""
    from router import repository

    def row(at: datetime) -> dict[str, Any]:
        return {
            "id": "req-1.abc",
            "task_type": "classify",
            "task_class": "classify",
            "tier": "trivial",
            "model": "gpt-4o-mini",
            "provider": "openai",
            "table_version": 1,
            "sampled": True,
            "input_tokens": 10,
            "has_tool_calls": False,
            "meta": {"team": "search"},
            "item_id": None,
            "caller": None,
            "shadow": False,
            "created_at": at,
        }

    for at in (NOW, NOW + timedelta(days=1), NOW):
        async with sessions() as session:
            await repository.insert_decisions(session, [row(at)])
            await session.commit()
    async with sessions() as session:
        stored = (await session.exec(select(Decision))).all()
    assert [(d.id, d.created_at, d.meta) for d in stored] == [
        ("req-1.abc", NOW, {"team": "search"})
    ]
