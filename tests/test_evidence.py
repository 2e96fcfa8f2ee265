"""The evidence behind an escalation, on SQLite and PostgreSQL: ``GET /v1/escalations/{id}``
over ASGI (paged, text only for ``read-samples``, 404 and 422 in the error shape) and
``tierwise class why CLASS``."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from evaluator.escalation import run_escalation
from evaluator.models import Grade
from router.db import utcnow
from router.keys import create_key
from router.policy import builtin_policy_path, parse_policy
from tests.conftest import apply, running_service
from tests.seeding import seed_grades
from tierwise.cli import app

pytestmark = pytest.mark.asyncio

POLICY = parse_policy(
    builtin_policy_path("default").read_text(encoding="utf-8")
    + '\n[[classes]]\nmatch = "classify*"\ngrader = "exact"\n',
    source="test policy",
)
MINI = "gpt-4o-mini"


async def test_the_samples_behind_an_escalation_are_paged_with_their_text(
    database_url: str,
) -> None:
    async with running_service(database_url, policy=None) as svc:
        await apply(svc.sessions, POLICY)
        # Before the window (the class's last change): not evidence of this event.
        await seed_grades(
            svc.sessions, "classify", MINI, n=5, k=5, decided_at=utcnow() - timedelta(days=1)
        )
        await seed_grades(svc.sessions, "classify", MINI, n=400, k=20)
        await seed_grades(svc.sessions, "extract_field", MINI, n=10, k=10)  # another class
        async with svc.sessions() as session:
            await session.exec(
                sa.update(Grade)
                .where(Grade.verdict == "disagree")  # type: ignore[arg-type]
                .values(raw_output="the reference says b", score=0.0)
            )
            await session.commit()
        run = await run_escalation(svc.sessions)
        assert "classify" in run.escalated
        # Graded after the event was recorded: not evidence either.
        await seed_grades(svc.sessions, "classify", MINI, n=3, k=3)
        [event] = (await svc.client.get("/v1/escalations?task_class=classify")).json()
        assert (event["n"], event["k"]) == (400, 20)

        seen: list[dict[str, object]] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": "150", **({"cursor": cursor} if cursor else {})}
            resp = await svc.client.get(f"/v1/escalations/{event['id']}", params=params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["counts"] == {"agree": 380, "disagree": 20, "invalid": 0, "refused": 0}
            assert body["event"]["id"] == event["id"] and body["text_included"] is True
            seen += body["samples"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert (pages, len(seen), len({s["grade_id"] for s in seen})) == (3, 400, 400)
        assert all(s["model"] == MINI and s["shadow"] is False for s in seen)
        first = seen[0]
        assert first["input_messages"] == [{"role": "user", "content": "q"}]
        assert first["answer"] == "a"

        bad = await svc.client.get(f"/v1/escalations/{event['id']}?verdict=disagree&limit=200")
        samples = bad.json()["samples"]
        assert len(samples) == 20 and bad.json()["next_cursor"] is None
        assert {(s["verdict"], s["judge_output"], s["score"]) for s in samples} == {
            ("disagree", "the reference says b", 0.0)
        }

        missing = await svc.client.get("/v1/escalations/999999")
        assert missing.status_code == 404
        assert missing.json()["error"]["field"] == "event_id"
        assert missing.json()["error"]["code"] == "not_found"
        for query, field in (("cursor=abc", "cursor"), ("verdict=maybe", "verdict")):
            resp = await svc.client.get(f"/v1/escalations/{event['id']}?{query}")
            assert resp.status_code == 422 and resp.json()["error"]["field"] == field, resp.text

        # The CLI shows the same evidence.
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["class", "why", "classify", "--limit", "5", "--database-url", database_url],
        )
        assert result.exit_code == 0, result.output
        assert f"event {event['id']}: classify: {MINI} (baseline) -> " in result.output
        assert "evidence: 20/400 disagreements, 5.0%" in result.output
        assert "samples behind it: agree 380, disagree 20, invalid 0, refused 0" in result.output
        assert f"next page: --cursor {seen[4]['grade_id']}" in result.output
        as_json = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["class", "why", "classify", "--verdict", "disagree", "--json",
             "--database-url", database_url],
        )  # fmt: skip
        assert as_json.exit_code == 0, as_json.output
        parsed = json.loads(as_json.output)
        assert len(parsed["samples"]) == 20 and parsed["event"]["k"] == 20
        none = await asyncio.to_thread(
            CliRunner().invoke, app, ["class", "why", "summarize", "--database-url", database_url]
        )
        assert none.exit_code == 2 and "has no escalation event" in none.output


async def test_the_text_only_for_callers_allowed_to_read_samples(database_url: str) -> None:
    async with running_service(database_url, policy=None) as svc:
        await apply(svc.sessions, POLICY)
        await seed_grades(svc.sessions, "classify", MINI, n=400, k=20)
        await run_escalation(svc.sessions)
        async with svc.sessions() as session:
            reader = await create_key(session, "reader", ["read-samples"])
            admin = await create_key(session, "ops", ["admin"])
            router_only = await create_key(session, "app", ["route"])
            await session.commit()
        await svc.app.state.keys.refresh()
        path = "/v1/escalations/1?limit=2"
        assert (await svc.client.get(path)).status_code == 401
        full = await svc.client.get(path, headers={"authorization": f"Bearer {reader.key}"})
        assert full.status_code == 200 and full.json()["text_included"] is True
        assert full.json()["samples"][0]["answer"] == "a"
        bare = await svc.client.get(path, headers={"x-api-key": admin.key})
        assert bare.status_code == 200, bare.text
        body = bare.json()
        assert body["text_included"] is False
        assert {(s["input_messages"], s["answer"], s["judge_output"]) for s in body["samples"]} == {
            (None, None, None)
        }
        assert body["samples"][0]["verdict"] in ("agree", "disagree")
        refused = await svc.client.get(path, headers={"x-api-key": router_only.key})
        assert refused.status_code == 403
        assert "read-samples" in refused.json()["error"]["message"]
