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


async def test_a_class_on_its_reference_model_says_so_instead_of_waiting_forever(
    service: Service,
) -> None:
    """compliance_check is critical: the default policy serves it on claude-3-5-sonnet, its
    reference model, so it is never sampled. Its status is a state of its own, not a 'not yet
    conclusive' that no amount of traffic would resolve."""
    from evaluator.report import class_reports

    for i in range(200):
        r = await service.client.post(
            "/v1/route", json={"task_type": "compliance_check", "input_tokens": 100 + i}
        )
        assert r.json()["model"] == "claude-3-5-sonnet" and r.json()["sampled"] is False
    await service.router.flush()
    body = (await service.client.get("/v1/classes/compliance_check/quality")).json()
    assert body["rule_action"] == "on_reference"
    assert body["reason"].startswith("on its reference model claude-3-5-sonnet: not sampled")
    async with service.sessions() as session:
        reports = {r.task_class: r for r in await class_reports(session)}
    assert reports["compliance_check"].label == "on reference model"
    assert reports["classify"].label == "not yet conclusive"  # sampled, no grades yet
