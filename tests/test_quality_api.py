"""GET /v1/classes/{class}/quality (an empty window is null, not a 500)."""

from __future__ import annotations

import pytest

from tests.conftest import Service

pytestmark = pytest.mark.asyncio


async def test_class_with_no_grades_reports_null_rate(service: Service) -> None:
    resp = await service.client.get("/v1/classes/classify/quality")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["n_graded"] == 0
    assert body["disagreement_rate"] is None
    assert (body["ci_low"], body["ci_high"]) == (None, None)
    assert body["rule_action"] == "too_few"


async def test_unknown_class_is_404(service: Service) -> None:
    resp = await service.client.get("/v1/classes/never-seen/quality")
    assert resp.status_code == 404
    assert resp.json()["error"]["field"] == "task_class"
