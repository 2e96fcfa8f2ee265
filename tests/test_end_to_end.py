"""The whole loop over HTTP, on SQLite and Postgres: route -> outcome -> sample -> grade ->
escalate -> the next route call gets the stronger model."""

from __future__ import annotations

import pytest

from evaluator import replay
from evaluator.datasets import HeldOutSet, load_held_out
from router.sampling import is_sampled
from tests.conftest import DATASETS, running_service

pytestmark = pytest.mark.asyncio


def only(held_out: HeldOutSet, task_type: str) -> HeldOutSet:
    return HeldOutSet(
        held_out.name, held_out.path, [i for i in held_out.items if i.task_type == task_type]
    )


async def test_route_to_escalation_over_http(database_url: str) -> None:
    math = only(load_held_out(DATASETS / "mt_bench.jsonl"), "mt_bench.math")
    async with running_service(database_url, "replay") as svc:
        first = (
            await svc.client.post(
                "/v1/route", json={"task_type": "mt_bench.math", "input_tokens": 100}
            )
        ).json()
        assert (first["model"], first["table_version"]) == ("mixtral-8x7b-instruct", 1)

        plan = replay.plan([math], per_class=1200, seed=3)
        sent = await replay.run(svc.client, svc.router, svc.evaluator, plan, tick=300)
        assert sent == 1200

        events = (await svc.client.get("/v1/escalations")).json()
        assert len(events) == 1
        event = events[0]
        assert (event["task_class"], event["from_model"], event["to_model"]) == (
            "mt_bench.math",
            "mixtral-8x7b-instruct",
            "gpt-4-1106-preview",
        )
        assert event["n"] >= 30 and event["k"] / event["n"] == pytest.approx(event["rate"])
        assert event["ci_low"] > 0.03 and event["actor"] == "escalation-job"

        after = (
            await svc.client.post(
                "/v1/route", json={"task_type": "mt_bench.math", "input_tokens": 100}
            )
        ).json()
        assert after["model"] == "gpt-4-1106-preview"
        assert after["table_version"] == event["table_version"] == 2
        # Escalated, even on its reference model, the class is still sampled at its rate: those
        # samples are the shadow probes of the cheaper model that can bring it back down.
        assert after["sampled"] is is_sampled(after["decision_id"], 0.05)

        quality = (await svc.client.get("/v1/classes/mt_bench.math/quality")).json()
        assert (quality["status"], quality["model"], quality["n_graded"]) == (
            "escalated",
            "gpt-4-1106-preview",
            0,
        )

        # Running the jobs again escalates nothing twice.
        await svc.evaluator.grade()
        assert (await svc.evaluator.escalate()).escalated == []
        assert len((await svc.client.get("/v1/escalations")).json()) == 1
