"""The flex lane: gateway calls on OpenAI's flex processing (``service_tier: "flex"``) at the
batch discount, driven by the official ``openai`` SDK against the loopback upstreams of
``tests/wire.py``; a flex 429 (no capacity) is answered in real time by the same model, without
holding it for real-time calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import openai
import pytest

from router.policy import parse_policy
from router.pricing import Usage, cost_nusd
from tests.test_gateway import HELLO, POLICY, Gateway, gateway_on
from tests.wire import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Reply,
    anthropic_message,
    anthropic_usage,
    error_reply,
    openai_chat,
    openai_usage,
)

FLEX = {"x-tierwise-lane": "flex"}


@pytest.fixture
async def gw(database_url: str) -> AsyncIterator[Gateway]:
    async with gateway_on(database_url) as gateway:
        yield gateway


CATALOG = {m.name: m for m in parse_policy(POLICY).spec.models}


def flex_reply(text: str, tier: str = "flex") -> Reply:
    body = openai_chat(text, usage=openai_usage(1000, 200), model="small-2024-07-18")
    return Reply(body={**body, "service_tier": tier})


async def _outcome_of(gw: Gateway, decision_id: str) -> tuple[int | None, list[tuple[str, str]]]:
    _, outcomes, _ = await gw.rows()
    outcome = next(o for o in outcomes if o.decision_id == decision_id)
    attempts = [(a["model"], a["status"]) for a in outcome.attempts or []]
    return outcome.cost_nusd, attempts


async def test_a_flex_call_is_sent_with_the_flex_tier_and_booked_at_the_batch_discount(
    gw: Gateway,
) -> None:
    gw.wire.enqueue(OPENAI_PATH, flex_reply("flexed"))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO, extra_headers=FLEX
    )
    assert raw.parse().choices[0].message.content == "flexed"
    assert [h.body.get("service_tier") for h in gw.wire.hits(OPENAI_PATH)] == ["flex"]
    cost, attempts = await _outcome_of(gw, raw.headers["x-tierwise-decision-id"])
    usage = Usage(input_tokens=1000, output_tokens=200)
    assert cost == cost_nusd(usage, CATALOG["small"], discount=Decimal("0.5"))
    assert cost is not None and cost * 2 == cost_nusd(usage, CATALOG["small"])
    assert attempts == [("small", "ok")]


async def test_a_flex_429_is_answered_in_real_time_by_the_same_model_and_holds_nothing(
    gw: Gateway,
) -> None:
    gw.wire.enqueue(
        OPENAI_PATH,
        error_reply(OPENAI_PATH, 429, headers={"retry-after": "30"}),
        Reply(body=openai_chat("real time", usage=openai_usage(1000, 200), model="small-x")),
        flex_reply("flex again"),
    )
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO, extra_headers=FLEX
    )
    assert raw.parse().choices[0].message.content == "real time"
    hits = gw.wire.hits(OPENAI_PATH)
    assert [(h.body["model"], h.body.get("service_tier")) for h in hits] == [
        ("small-2024-07-18", "flex"),
        ("small-2024-07-18", None),
    ]
    cost, attempts = await _outcome_of(gw, raw.headers["x-tierwise-decision-id"])
    assert attempts == [("small", "flex_unavailable"), ("small", "ok")]
    assert cost == cost_nusd(Usage(input_tokens=1000, output_tokens=200), CATALOG["small"])
    # The flex 429's Retry-After did not hold "small": the next call asks it again.
    again = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO, extra_headers=FLEX
    )
    assert again.headers["x-tierwise-model"] == "small"
    assert gw.wire.hits(OPENAI_PATH)[2].body.get("service_tier") == "flex"


async def test_an_answer_the_upstream_says_was_not_flex_is_booked_at_full_price(
    gw: Gateway,
) -> None:
    gw.wire.enqueue(OPENAI_PATH, flex_reply("default tier", tier="default"))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO, extra_headers=FLEX
    )
    cost, _ = await _outcome_of(gw, raw.headers["x-tierwise-decision-id"])
    assert cost == cost_nusd(Usage(input_tokens=1000, output_tokens=200), CATALOG["small"])


async def test_flex_applies_to_openai_models_only(gw: Gateway) -> None:
    gw.wire.enqueue(
        ANTHROPIC_PATH,
        Reply(body=anthropic_message("claude", usage=anthropic_usage(1000, 200))),
    )
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/summarize", messages=HELLO, extra_headers=FLEX
    )
    assert raw.headers["x-tierwise-model"] == "claude"
    assert "service_tier" not in gw.wire.hits(ANTHROPIC_PATH)[0].body
    cost, _ = await _outcome_of(gw, raw.headers["x-tierwise-decision-id"])
    assert cost == cost_nusd(Usage(input_tokens=1000, output_tokens=200), CATALOG["claude"])


async def test_a_real_time_call_is_never_sent_on_flex(gw: Gateway) -> None:
    gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("now", model="small-x")))
    await gw.client.chat.completions.create(model="tierwise/classify", messages=HELLO)
    assert "service_tier" not in gw.wire.hits(OPENAI_PATH)[0].body
    try:
        await gw.client.chat.completions.create(
            model="tierwise/classify", messages=HELLO, extra_headers={"x-tierwise-lane": "slow"}
        )
    except openai.BadRequestError as exc:
        assert isinstance(exc.body, dict) and exc.body["field"] == "x-tierwise-lane"
    else:
        raise AssertionError("an unknown lane was accepted")
