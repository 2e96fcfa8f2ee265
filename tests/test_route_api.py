"""POST /v1/route and GET /v1/routing-table against the default policy, over ASGI."""

from __future__ import annotations

import pytest

from router.table import change_class
from tests.conftest import Service

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("task_type", "tokens", "tools", "task_class", "tier", "model"),
    [
        ("classify", 499, False, "classify", "trivial", "gpt-4o-mini"),
        ("classify", 500, False, "classify:large", "standard", "claude-3-5-haiku"),
        ("route_intent", 10, True, "route_intent", "trivial", "gpt-4o-mini"),
        ("summarize", 1999, False, "summarize", "standard", "claude-3-5-haiku"),
        ("summarize", 1999, True, "summarize:large_or_tools", "standard", "claude-3-5-haiku"),
        (
            "qa_retrieval",
            2000,
            False,
            "qa_retrieval:large_or_tools",
            "standard",
            "claude-3-5-haiku",
        ),
        ("code_generation", 50, False, "code_generation", "complex", "claude-3-5-sonnet"),
        ("synthesis", 90_000, True, "synthesis", "complex", "claude-3-5-sonnet"),
        ("legal_review", 1, False, "legal_review", "critical", "claude-3-5-sonnet"),
        # No rule names it: routed as the "default" class (unknown_task_types = "default").
        ("poetry", 100, False, "default", "standard", "claude-3-5-haiku"),
    ],
)
async def test_default_policy_rules(
    service: Service,
    task_type: str,
    tokens: int,
    tools: bool,
    task_class: str,
    tier: str,
    model: str,
) -> None:
    resp = await service.client.post(
        "/v1/route",
        json={"task_type": task_type, "input_tokens": tokens, "has_tool_calls": tools},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["task_class"], body["tier"], body["model"]) == (task_class, tier, model)
    assert body["provider"] == ("openai" if model.startswith("gpt") else "anthropic")
    assert body["table_version"] == 1
    assert len(body["decision_id"]) == 32
    assert isinstance(body["sampled"], bool)
    assert body["reason"]


async def test_messages_are_estimated_offline(service: Service) -> None:
    # 2 messages of 400 and 1600 characters: 100 + 400 text tokens + 2 x 3 + 3 = 509 tokens.
    messages = [
        {"role": "system", "content": "x" * 400},
        {"role": "user", "content": [{"type": "text", "text": "y" * 1600}]},
    ]
    resp = await service.client.post(
        "/v1/route", json={"task_type": "classify", "messages": messages}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["input_tokens"] == 509
    assert resp.json()["task_class"] == "classify:large"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"input_tokens": 3}, "task_type"),
        ({"task_type": "classify"}, "input_tokens"),
        ({"task_type": "classify", "input_tokens": -1}, "input_tokens"),
        ({"task_type": "has space", "input_tokens": 1}, "task_type"),
        ({"task_type": "classify", "input_tokens": 1, "surprise": 1}, "surprise"),
        ({"task_type": "classify", "input_tokens": 1, "request_id": "x"}, "request_id"),
    ],
)
async def test_bad_route_input_names_the_field(
    service: Service, payload: dict[str, object], field: str
) -> None:
    resp = await service.client.post("/v1/route", json=payload)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "invalid_input"
    assert field in error["field"] or field in error["message"]


async def test_snapshot_follows_table_changes(service: Service) -> None:
    first = (
        await service.client.post("/v1/route", json={"task_type": "classify", "input_tokens": 5})
    ).json()
    assert first["model"] == "gpt-4o-mini"
    async with service.sessions() as session:
        await change_class(session, "classify", model="claude-3-5-haiku", status="escalated")
        await session.commit()
    await service.router.refresh()
    after = (
        await service.client.post("/v1/route", json={"task_type": "classify", "input_tokens": 5})
    ).json()
    assert after["model"] == "claude-3-5-haiku"
    assert after["table_version"] == first["table_version"] + 1
    table = (await service.client.get("/v1/routing-table")).json()
    row = next(e for e in table["entries"] if e["task_class"] == "classify")
    assert (row["model"], row["status"], row["version"]) == ("claude-3-5-haiku", "escalated", 2)


async def test_route_before_any_policy_is_a_clear_503(database_url: str) -> None:
    from tests.conftest import running_service

    async with running_service(database_url, policy=None) as svc:
        resp = await svc.client.post("/v1/route", json={"task_type": "classify", "input_tokens": 1})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "no_policy"


async def test_body_that_is_not_json_is_a_422_on_body(service: Service) -> None:
    for path in ("/v1/route", "/v1/outcomes"):
        resp = await service.client.post(
            path, content=b"garbage", headers={"content-type": "application/json"}
        )
        assert resp.status_code == 422
        assert resp.json()["error"]["field"] == "body"


async def test_policy_file_setting_applies_a_policy_on_first_start(database_url: str) -> None:
    from router.policy import builtin_policy_path
    from tests.conftest import running_service

    path = builtin_policy_path("default")
    async with running_service(database_url, policy=None, policy_file=path) as svc:
        resp = await svc.client.post("/v1/route", json={"task_type": "classify", "input_tokens": 1})
        assert resp.json()["table_version"] == 1
    # A second start does not apply it again.
    async with running_service(database_url, policy=None, policy_file=path) as svc:
        assert (await svc.client.get("/healthz")).json()["table_version"] == 1


async def test_routed_classes_enter_the_class_registry_once(service: Service) -> None:
    """The decision writer adds each new class to ``task_class``; the escalation job and the
    quality endpoint read the class list there."""
    from sqlmodel import select

    from router.models import TaskClass

    routed = [("classify", 10), ("classify", 900), ("classify", 20), ("summarize", 5)]
    for task_type, tokens in routed:
        r = await service.client.post(
            "/v1/route", json={"task_type": task_type, "input_tokens": tokens}
        )
        assert r.status_code == 200
        await service.router.flush()
    async with service.sessions() as session:
        names = (await session.exec(select(TaskClass.name).order_by(TaskClass.name))).all()
    assert names == ["classify", "classify:large", "summarize"]
    quality = await service.client.get("/v1/classes/summarize/quality")
    assert quality.status_code == 200 and quality.json()["n_graded"] == 0
    assert (await service.client.get("/v1/classes/never-routed/quality")).status_code == 404
