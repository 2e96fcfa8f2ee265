"""The policy's ``unknown_task_types``: a task type no rule names and no ``[[classes]]`` glob
matches is routed as the ``default`` class or refused, counted and warned about once; on the
decision API and on the gateway (``tierwise/<task_type>``), SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import openai
import pytest
from sqlmodel import col, select

from router.db import make_engine, session_factory
from router.errors import PolicyError
from router.models import Decision, TaskClass
from router.policy import builtin_policy_path, parse_policy
from tests.conftest import Service, apply, make_settings
from tests.serving import served
from tests.wire import OPENAI_PATH, Reply, WireServer, openai_chat
from tierwise.app import create_app

DEFAULT = builtin_policy_path("default").read_text(encoding="utf-8")


def with_setting(value: str | None, extra: str = "") -> str:
    """The default policy with ``unknown_task_types`` set to ``value`` (None: left out)."""
    body = DEFAULT.replace('unknown_task_types = "default"\n', "")
    assert body != DEFAULT
    if value is not None:
        body = f'unknown_task_types = "{value}"\n' + body
    return body + extra


@asynccontextmanager
async def on_policy(database_url: str, body: str) -> AsyncIterator[Service]:

    engine = make_engine(database_url)
    await apply(session_factory(engine), parse_policy(body))
    await engine.dispose()
    app = create_app(make_settings(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tierwise") as client:
            yield Service(app, client)


async def decisions(svc: Service) -> list[Decision]:
    await svc.router.flush()
    async with svc.sessions() as session:
        return list((await session.exec(select(Decision).order_by(col(Decision.created_at)))).all())


async def test_the_default_is_default_and_a_typo_lands_in_the_default_class(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert parse_policy(with_setting(None)).spec.unknown_task_types == "default"
    caplog.set_level(logging.WARNING, logger="router.task_types")
    async with on_policy(database_url, with_setting(None)) as svc:
        for tokens in (10, 20, 30):
            resp = await svc.client.post(
                "/v1/route", json={"task_type": "clasify", "input_tokens": tokens}
            )
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert (body["task_class"], body["tier"], body["model"]) == (
                "default",
                "standard",
                "claude-3-5-haiku",
            )
            assert body["reason"].startswith("unknown task type 'clasify' -> default: ")
        known = await svc.client.post(
            "/v1/route", json={"task_type": "classify", "input_tokens": 1}
        )
        assert known.json()["task_class"] == "classify"
        other = await svc.client.post("/v1/route", json={"task_type": "poem", "input_tokens": 1})
        assert other.json()["task_class"] == "default"
        table = (await svc.client.get("/v1/routing-table")).json()
        rows = await decisions(svc)
        async with svc.sessions() as session:
            classes = {c.name for c in (await session.exec(select(TaskClass))).all()}
    assert table["unknown_task_types"] == {
        "policy": "default",
        "routed_as_default": 4,
        "rejected": 0,
        "task_types": [
            {"task_type": "clasify", "action": "default", "count": 3},
            {"task_type": "poem", "action": "default", "count": 1},
        ],
    }
    # The decision keeps the task type as sent; no class named after the typo exists.
    assert [(d.task_type, d.task_class) for d in rows] == [
        ("clasify", "default"),
        ("clasify", "default"),
        ("clasify", "default"),
        ("classify", "classify"),
        ("poem", "default"),
    ]
    assert classes == {"default", "classify"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "router.task_types"]
    assert len(warnings) == 2, warnings  # once per task type
    assert "'clasify'" in warnings[0] and "'poem'" in warnings[1]


async def test_default_applies_the_default_class_rules_and_settings(database_url: str) -> None:
    extra = """
[[rules]]
task_types = ["default"]
tier = "trivial"
class_suffix = ":fallback"
"""
    body = with_setting("default", extra)
    policy = parse_policy(body)
    assert policy.is_known("default") and not policy.is_known("clasify")
    async with on_policy(database_url, body) as svc:
        resp = await svc.client.post("/v1/route", json={"task_type": "clasify", "input_tokens": 1})
    assert (resp.json()["task_class"], resp.json()["model"]) == ("default:fallback", "gpt-4o-mini")


async def test_reject_answers_422_naming_task_type_with_the_known_types(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="router.task_types")
    extra = '\n[[classes]]\nmatch = "mt_bench.*"\nsample_rate = 0.5\n'
    async with on_policy(database_url, with_setting("reject", extra)) as svc:
        for _ in range(2):
            resp = await svc.client.post(
                "/v1/route", json={"task_type": "clasify", "input_tokens": 1}
            )
            assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        # A glob-matched task type and "default" are known.
        for task_type in ("mt_bench.coding", "default", "classify"):
            ok = await svc.client.post(
                "/v1/route", json={"task_type": task_type, "input_tokens": 1}
            )
            assert ok.status_code == 200, ok.text
        table = (await svc.client.get("/v1/routing-table")).json()
        rows = await decisions(svc)
    assert (error["code"], error["field"], error["param"]) == (
        "unknown_task_type",
        "task_type",
        "task_type",
    )
    assert error["message"] == (
        "task_type: unknown task type 'clasify' (the policy's unknown_task_types is \"reject\"); "
        "known task types: classify, extract_field, route_intent, summarize, qa_retrieval, "
        "generate_reply, code_generation, multi_step_reasoning, synthesis, compliance_check, "
        "legal_review, medical_content, mt_bench.*, default"
    )
    assert table["unknown_task_types"] == {
        "policy": "reject",
        "routed_as_default": 0,
        "rejected": 2,
        "task_types": [{"task_type": "clasify", "action": "reject", "count": 2}],
    }
    assert sorted(d.task_type for d in rows) == ["classify", "default", "mt_bench.coding"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "router.task_types"]
    assert len(warnings) == 1 and "refused" in warnings[0]


async def test_a_catch_all_glob_makes_every_task_type_its_own_class(database_url: str) -> None:
    body = with_setting("reject", '\n[[classes]]\nmatch = "*"\n')
    async with on_policy(database_url, body) as svc:
        resp = await svc.client.post("/v1/route", json={"task_type": "poem", "input_tokens": 1})
    assert resp.json()["task_class"] == "poem"


def test_a_bad_value_is_refused_naming_the_key() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(with_setting("ignore"))
    assert caught.value.field == "unknown_task_types"
    assert "'default' or 'reject'" in caught.value.message


@pytest.mark.parametrize("value", ["default", "reject"])
async def test_the_gateway_follows_the_setting(database_url: str, value: str) -> None:
    engine = make_engine(database_url)
    await apply(session_factory(engine), parse_policy(with_setting(value)))
    await engine.dispose()
    hello = [{"role": "user", "content": "hi"}]
    with WireServer() as wire:
        settings = make_settings(
            database_url, openai_base_url=wire.openai_base_url, gateway_upstream="openai"
        )
        app = create_app(settings)
        async with served(app) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
            try:
                if value == "default":
                    wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("ok")))
                    raw = await client.chat.completions.with_raw_response.create(
                        model="tierwise/clasify",
                        messages=hello,  # type: ignore[arg-type]
                    )
                    assert raw.headers["x-tierwise-task-class"] == "default"
                else:
                    with pytest.raises(openai.BadRequestError) as caught:
                        await client.chat.completions.create(
                            model="tierwise/clasify",
                            messages=hello,  # type: ignore[arg-type]
                        )
                    err = caught.value.body
                    assert isinstance(err, dict)
                    assert (caught.value.status_code, err["code"], err["param"]) == (
                        400,
                        "unknown_task_type",
                        "model",
                    )
                    assert "known task types: classify," in err["message"]
                    with pytest.raises(openai.BadRequestError) as header:
                        await client.chat.completions.create(
                            model="tierwise",
                            messages=hello,  # type: ignore[arg-type]
                            extra_headers={"X-Tierwise-Task-Type": "clasify"},
                        )
                    assert isinstance(header.value.body, dict)
                    assert header.value.body["param"] == "x-tierwise-task-type"
                    assert wire.hits(OPENAI_PATH) == []
            finally:
                await client.close()
        router = app.state.router
        counts = [(c.task_type, c.action, c.count) for c in router.unknown_task_types.counts()]
    assert counts == [("clasify", value, 1 if value == "default" else 2)]
