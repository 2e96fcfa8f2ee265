"""The OpenAPI document is complete (walked here), and the running service keeps to it:
schemathesis generates requests for every operation from the document (valid and invalid ones,
bounded and seeded, so a run is repeatable), sends them to a real ``tierwise`` server on
loopback (SQLite and PostgreSQL, with an API key, the gateway's upstream a loopback OpenAI wire
server) and fails on any 5xx, any status the document does not list for the operation, and any
answer that does not match its schema."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from router.db import make_engine, session_factory
from router.keys import SCOPES, create_key
from tests.conftest import apply, make_settings, policy_named
from tests.serving import served
from tests.wire import OPENAI_PATH, Hit, Reply, WireServer, openai_chat, openai_stream
from tierwise.app import create_app
from tierwise.settings import Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
"""Examples per operation and generation mode (the run's time grows with it; ~13 operations x 2
modes)."""


def document() -> dict[str, Any]:
    return create_app(Settings(database_url="sqlite+aiosqlite:///:memory:")).openapi()


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def named(schema: dict[str, Any]) -> bool:
    """A schema given by reference to components (or a list / choice of such)."""
    if "$ref" in schema:
        return True
    if schema.get("type") == "array":
        return named(schema["items"])
    choices: list[dict[str, Any]] = schema.get("oneOf") or schema.get("anyOf") or []
    return bool(choices) and all(named(c) for c in choices)


# ---- completeness -----------------------------------------------------------------------------


def test_every_reference_resolves_and_every_schema_is_named() -> None:
    doc = document()
    components = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in components, ref
    # Not JSON by design: Prometheus's text format, a file's bytes, a multipart upload.
    not_json = {("GET /metrics", "200"), ("GET /v1/files/{file_id}/content", "200")}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            body = op.get("requestBody")
            if body is not None:
                assert body["required"] is True, where
                if where == "POST /v1/files":
                    assert "multipart/form-data" in body["content"], where
                else:
                    assert named(body["content"]["application/json"]["schema"]), where
            for status, response in op["responses"].items():
                content = response.get("content", {})
                if (where, status) in not_json:
                    assert content and "application/json" not in content, (where, status)
                    continue
                assert "application/json" in content, (where, status)
                schema = content["application/json"]["schema"]
                if status.startswith("2"):
                    assert named(schema), (where, status, schema)
                else:
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (where, status)
    # What the issue found missing, and the error body's shape.
    assert {"OutcomeIn", "Message", "ChatCompletionRequest", "ChatCompletionOut"} <= set(components)
    error = components["ErrorBody"]
    assert set(error["required"]) == {"code", "message", "field", "type", "param"}


def api_routes(routes: list[Any]) -> set[tuple[str, str]]:
    """(method, path) of every API route, through included routers."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, APIRoute):
            if route.include_in_schema:
                found |= {(m.lower(), route.path) for m in (route.methods or set()) - {"HEAD"}}
        elif hasattr(route, "original_router"):
            found |= api_routes(route.original_router.routes)
    return found


def test_every_route_is_documented_with_its_error_statuses() -> None:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    doc = app.openapi()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert api_routes(app.routes) == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            statuses = {int(s) for s in op["responses"]}
            where = f"{method.upper()} {path}"
            if path == "/healthz":
                assert statuses == {200}, where
                continue
            assert {200, 401, 403, 503} <= statuses, where
            if "requestBody" in op:
                assert 413 in statuses, where
                assert (400 if path == "/v1/chat/completions" else 422) in statuses, where
            if op.get("parameters"):
                assert statuses & {400, 422}, where
            if "{task_class}" in path:
                assert 404 in statuses, where
            if path.endswith(("/pin", "/unpin", "/override")):
                assert 409 in statuses, where
    assert {int(s) for s in doc["paths"]["/v1/outcomes"]["post"]["responses"]} == {
        200, 401, 403, 404, 413, 422, 503,
    }  # fmt: skip
    assert {int(s) for s in doc["paths"]["/v1/chat/completions"]["post"]["responses"]} == {
        200, 400, 401, 403, 404, 409, 413, 422, 429, 502, 503, 504,
    }  # fmt: skip


# ---- schemathesis against a running server ----------------------------------------------------


def answer(hit: Hit) -> Reply:
    """The upstream: a stream when asked for one, else a completion."""
    body = hit.body if isinstance(hit.body, dict) else {}
    if body.get("stream") is True:
        return Reply(events=openai_stream(["o", "k"], finish_reason="stop"))
    return Reply(body=openai_chat("ok"))


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(doc: dict[str, Any], base_url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """Every operation, positive and negative examples; the calls made and the failures."""
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    calls = 0
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=EXAMPLES,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    nonlocal calls
                    calls += 1
                    case.call_and_validate(
                        base_url=base_url, session=session, headers=headers, checks=CHECKS
                    )

                try:
                    run()
                except Exception as exc:
                    if "Unsatisfiable" in type(exc).__name__ or "no negative" in str(exc).lower():
                        continue  # nothing invalid to send (an operation with no inputs)
                    failures.append(f"{mode.value} {operation.label}: {exc}"[:3000])
    return calls, failures


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    await apply(sessions, policy_named("default"))
    async with sessions() as session:
        made = await create_key(session, "schemathesis", SCOPES)
        await session.commit()
    await engine.dispose()
    with WireServer() as wire:
        wire.respond(OPENAI_PATH, answer)
        app = create_app(
            make_settings(
                database_url,
                openai_base_url=wire.openai_base_url,
                gateway_upstream="openai",
                max_request_bytes=256 * 1024,
            )
        )
        doc = app.openapi()
        async with served(app) as url:
            headers = {"authorization": f"Bearer {made.key}"}
            calls, failures = await asyncio.to_thread(fuzz, doc, url, headers)
    assert failures == [], "\n\n".join(failures)
    assert calls >= len(doc["paths"]) * EXAMPLES  # every operation was exercised


@pytest.fixture(autouse=True)
def _no_schemathesis_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """schemathesis reads schemathesis.toml from the working directory; none applies here."""
    monkeypatch.chdir(tmp_path)
