"""JSON columns save changes made in place, on SQLite and PostgreSQL; nested values are
read-only, so a change the column could not see fails instead of being lost."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.main import default_registry

from evaluator.models import EscalationEvent, JobRun, RuleStateRow
from router.cache.models import CacheEntry, CacheGuardEvent
from router.db import NESTED_JSON_READ_ONLY, JSONDict, JSONList, JSONTrackingModel
from router.models import Decision, Outcome, Sample

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
Mutation = Callable[[Any], object]


def _rows() -> list[SQLModel]:
    """One row per table with a JSON column, parents first."""
    return [
        Decision(
            id="dec-1",
            task_type="summarise",
            task_class="summarise",
            tier="standard",
            model="small-model",
            provider="openai",
            table_version=1,
            sampled=True,
            input_tokens=10,
            has_tool_calls=False,
            meta={"item_id": "q-1"},
            created_at=AT,
        ),
        Outcome(
            decision_id="dec-1",
            task_class="summarise",
            served_model="small-model",
            status="ok",
            usage_raw={"prompt_tokens": 10, "details": {"cached_tokens": 2}},
            decided_at=AT,
            created_at=AT,
        ),
        Sample(
            decision_id="dec-1",
            task_class="summarise",
            model="small-model",
            input_messages=[{"role": "user", "content": "Summarise: the cat sat."}],
            output_text="A cat sat.",
            meta={"item_id": "q-1", "first_attempt": {"verdict": "invalid"}},
            decided_at=AT,
            created_at=AT,
        ),
        EscalationEvent(
            id=1,
            task_class="summarise",
            from_model="small-model",
            to_model="large-model",
            from_status="baseline",
            to_status="escalated",
            actor="evaluator",
            reason="disagreement above threshold",
            rule="sequential",
            n=40,
            k=12,
            rate=0.3,
            ci_low=0.18,
            ci_high=0.45,
            threshold=0.2,
            confidence=0.95,
            table_version=2,
            window_start=AT,
            created_at=AT,
            evidence={"statistic": 3.5, "run": {"n": 40, "k": 12}},
        ),
        RuleStateRow(
            task_class="summarise",
            model="small-model",
            window_start=AT,
            state={"v": 1, "n": 40, "k": 12},
            action="continue",
            updated_at=AT,
            counts={"own": {"through": AT.isoformat(), "counts": {"agree": 28}}, "shadow": None},
        ),
        JobRun(
            id=1,
            job="grading",
            tick=AT,
            worker="host-1:4242",
            started_at=AT,
            result={"graded": 3},
        ),
        CacheEntry(
            id="e" * 32,
            namespace="key:k1",
            task_class="summarise",
            model="small-model",
            route_version=1,
            scope="s" * 64,
            key_hash="k" * 64,
            embedder="wordllama/l2_supercat-256",
            dim=2,
            embedding=[0.6, 0.8],
            query_text="Summarise: the cat sat.",
            response={"model": "small-model", "choices": [{"index": 0}]},
            usage={"prompt_tokens": 10, "completion_tokens": 4},
            created_at=AT,
            expires_at=AT,
        ),
        CacheGuardEvent(
            id=1,
            task_class="summarise",
            model="small-model",
            action="raise",
            from_threshold=0.92,
            to_threshold=0.945,
            k=3,
            n=40,
            target=0.01,
            reason="3 false of 40",
            evidence=[{"threshold": 0.92, "k": 3, "n": 40}],
            created_at=AT,
        ),
    ]


async def _seed(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        for row in _rows():
            session.add(row)
            await session.flush()
        await session.commit()


# column -> (model, primary key, attribute)
WHERE: dict[str, tuple[type[SQLModel], object, str]] = {
    "decision.meta": (Decision, "dec-1", "meta"),
    "outcome.usage_raw": (Outcome, "dec-1", "usage_raw"),
    "sample.input_messages": (Sample, "dec-1", "input_messages"),
    "sample.meta": (Sample, "dec-1", "meta"),
    "escalation_event.evidence": (EscalationEvent, 1, "evidence"),
    "rule_state.state": (RuleStateRow, "summarise", "state"),
    "rule_state.counts": (RuleStateRow, "summarise", "counts"),
    "job_run.result": (JobRun, 1, "result"),
    "cache_entry.response": (CacheEntry, "e" * 32, "response"),
    "cache_entry.usage": (CacheEntry, "e" * 32, "usage"),
    "cache_guard_event.evidence": (CacheGuardEvent, 1, "evidence"),
}


def _set_key(value: Any) -> None:
    value["team"] = "search"


def _delete_key(value: Any) -> None:
    del value["details"]


def _append(value: Any) -> None:
    value.append({"role": "assistant", "content": "A cat sat."})


def _replace_item(value: Any) -> None:
    value[0] = {**value[0], "content": "Summarise: the dog sat."}


def _replace_nested(value: Any) -> None:
    value["first_attempt"] = {**value["first_attempt"], "cost_usd": 0.002}


def _update(value: Any) -> None:
    value.update({"limit": 4.0})


def _pop(value: Any) -> None:
    value.pop("k")


def _pop_prompt(value: Any) -> None:
    value.pop("prompt_tokens")


def _append_threshold(value: Any) -> None:
    value.append({"threshold": 0.945, "k": 0, "n": 12})


def _merge(value: Any) -> None:
    value |= {"failed": 1}


CASES: list[tuple[str, Mutation, object]] = [
    ("decision.meta", _set_key, {"item_id": "q-1", "team": "search"}),
    ("outcome.usage_raw", _delete_key, {"prompt_tokens": 10}),
    (
        "sample.input_messages",
        _append,
        [
            {"role": "user", "content": "Summarise: the cat sat."},
            {"role": "assistant", "content": "A cat sat."},
        ],
    ),
    (
        "sample.input_messages",
        _replace_item,
        [{"role": "user", "content": "Summarise: the dog sat."}],
    ),
    (
        "sample.meta",
        _replace_nested,
        {"item_id": "q-1", "first_attempt": {"verdict": "invalid", "cost_usd": 0.002}},
    ),
    (
        "escalation_event.evidence",
        _update,
        {"statistic": 3.5, "run": {"n": 40, "k": 12}, "limit": 4.0},
    ),
    ("rule_state.state", _pop, {"v": 1, "n": 40}),
    ("job_run.result", _merge, {"graded": 3, "failed": 1}),
    (
        "cache_entry.response",
        _set_key,
        {"model": "small-model", "choices": [{"index": 0}], "team": "search"},
    ),
    ("cache_entry.usage", _pop_prompt, {"completion_tokens": 4}),
    (
        "cache_guard_event.evidence",
        _append_threshold,
        [{"threshold": 0.92, "k": 3, "n": 40}, {"threshold": 0.945, "k": 0, "n": 12}],
    ),
]


@pytest.mark.parametrize(
    ("column", "mutate", "expected"),
    CASES,
    ids=[f"{column}-{mutate.__name__.strip('_')}" for column, mutate, _ in CASES],
)
async def test_a_change_in_place_is_saved(
    sessions: async_sessionmaker[AsyncSession],
    column: str,
    mutate: Mutation,
    expected: object,
) -> None:
    await _seed(sessions)
    model, key, attr = WHERE[column]
    async with sessions() as session:
        row = await session.get(model, key)
        mutate(getattr(row, attr))
        await session.commit()
    async with sessions() as session:
        row = await session.get(model, key)
        assert getattr(row, attr) == expected


async def test_a_change_to_a_value_set_in_python_is_saved(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        built = JobRun(id=2, job="escalation", tick=AT, worker="w", started_at=AT, result={})
        assigned = JobRun(id=3, job="shadow", tick=AT, worker="w", started_at=AT)
        session.add_all([built, assigned])
        await session.commit()
        assert built.result is not None
        built.result["changed"] = 1
        assigned.result = {"first": 1}
        assigned.result["second"] = 2
        await session.commit()
        assigned.result["third"] = 3
        await session.commit()
    async with sessions() as session:
        stored = {
            run.id: run.result for run in [await session.get(JobRun, i) for i in (2, 3)] if run
        }
        assert stored == {2: {"changed": 1}, 3: {"first": 1, "second": 2, "third": 3}}


async def test_a_nested_change_is_refused_and_nothing_is_lost(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _seed(sessions)
    async with sessions() as session:
        sample = await session.get(Sample, "dec-1")
        assert sample is not None and sample.meta is not None
        with pytest.raises(TypeError) as refused:
            sample.input_messages[0]["content"] = "changed"
        assert str(refused.value) == NESTED_JSON_READ_ONLY
        with pytest.raises(TypeError):
            sample.meta["first_attempt"]["cost_usd"] = 0.002
        sample.meta["notes"] = {"tags": ["a"]}
        with pytest.raises(TypeError):
            sample.meta["notes"]["tags"].append("b")
        # A copy is a plain value to change and put back.
        notes = copy.deepcopy(sample.meta["notes"])
        notes["tags"].append("b")
        sample.meta["notes"] = notes
        await session.commit()
    async with sessions() as session:
        sample = await session.get(Sample, "dec-1")
        assert sample is not None
        assert sample.input_messages == [{"role": "user", "content": "Summarise: the cat sat."}]
        assert sample.meta == {
            "item_id": "q-1",
            "first_attempt": {"verdict": "invalid"},
            "notes": {"tags": ["a", "b"]},
        }


def test_every_json_column_saves_changes_in_place() -> None:
    """A JSON column must be JSONDict or JSONList, in a model based on JSONTrackingModel."""
    json_columns: dict[str, bool] = {}
    for mapper in default_registry.mappers:
        table = mapper.local_table
        assert isinstance(table, sa.Table)
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                json_columns[f"{table.name}.{column.name}"] = (
                    column.type is JSONDict or column.type is JSONList
                ) and issubclass(mapper.class_, JSONTrackingModel)
    assert json_columns == {
        "model.aliases": True,
        "api_key.scopes": True,
        "decision.meta": True,
        "outcome.usage_raw": True,
        "outcome.attempts": True,
        "sample.input_messages": True,
        "sample.meta": True,
        "escalation_event.evidence": True,
        "rule_state.state": True,
        "rule_state.counts": True,
        "job_run.result": True,
        "grading_batch_item.response": True,
        "compression_probe.pipeline": True,
        "compression_probe.input_messages": True,
        "compression_state.rule_state": True,
        "compression_event.evidence": True,
        "lane_batch.meta": True,
        "lane_item.body": True,
        "lane_item.response": True,
        "lane_item.error": True,
        "cache_entry.response": True,
        "cache_entry.usage": True,
        "cache_guard_event.evidence": True,
    }
