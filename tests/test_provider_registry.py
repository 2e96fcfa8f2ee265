"""The provider registry: each catalog model's calls go to its own provider, with the id that
provider's API expects; dated ids reported back are priced as the catalog model.

The default policy's ladder mixes OpenAI and Anthropic (gpt-4o-mini -> claude-3-5-haiku ->
claude-3-5-sonnet), so one grading run sends judge calls, reference answers and shadow probes
to both loopback wire servers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlmodel import select

from evaluator.models import Grade
from router.db import utcnow
from router.errors import InvalidInput
from router.policy import ModelPrice, parse_policy
from router.providers import (
    ChatRequest,
    ChatResponse,
    Provider,
    ProviderConfig,
    ProviderError,
    ProviderRegistry,
    ReplayProvider,
    adapters_from_settings,
)
from router.sampling import sample_point
from router.table import change_class
from tests.conftest import apply, make_settings, policy_named, running_service
from tests.seeding import add_samples
from tests.wire import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Hit,
    Reply,
    WireServer,
    openai_chat,
    structured_request,
    verdict_reply,
)

KEY = "sk-wire-test"


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


class Named(Provider):
    """A provider that answers with its own name and the model id it was asked for."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        from router.pricing import Usage

        return ChatResponse(f"{self.name}:{request.model}", request.model, "stop", Usage())


CATALOG = {
    "mini": ModelPrice(name="mini", provider="openai", input_usd_per_mtok=1, output_usd_per_mtok=1),
    "sonnet": ModelPrice(
        name="sonnet",
        provider="anthropic",
        api_model="claude-3-5-sonnet-20241022",
        input_usd_per_mtok=3,
        output_usd_per_mtok=15,
    ),
    "llama": ModelPrice(
        name="llama", provider="together", input_usd_per_mtok=1, output_usd_per_mtok=1
    ),
}


def ask(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": "q"}])


async def test_each_model_goes_to_its_provider_with_its_api_id() -> None:
    registry = ProviderRegistry(
        {"openai": Named("openai"), "anthropic": Named("anthropic")}, lambda: CATALOG
    )
    assert (await registry.for_model("mini").complete(ask("mini"))).text == "openai:mini"
    sonnet = registry.for_model("sonnet")
    assert sonnet.name == "anthropic"
    assert (await sonnet.complete(ask("sonnet"))).text == "anthropic:claude-3-5-sonnet-20241022"
    assert registry.unconfigured(CATALOG) == {"together": ["llama"]}


async def test_a_model_without_a_configured_provider_fails_naming_the_setting() -> None:
    registry = ProviderRegistry({"openai": Named("openai")}, lambda: CATALOG)
    with pytest.raises(ProviderError) as caught:
        await registry.for_model("llama").complete(ask("llama"))
    assert "TIERWISE_PROVIDERS" in caught.value.message and not caught.value.transient
    with pytest.raises(ProviderError) as caught:
        await registry.for_model("sonnet").complete(ask("sonnet"))
    assert "TIERWISE_ANTHROPIC_API_KEY" in caught.value.message
    with pytest.raises(ProviderError, match="not in the catalog"):
        await registry.for_model("nope").complete(ask("nope"))


async def test_forced_provider_takes_every_model_and_replay_keeps_catalog_names() -> None:
    forced = ProviderRegistry({}, lambda: CATALOG, force=Named("router"))
    assert (await forced.for_model("llama").complete(ask("llama"))).text == "router:llama"
    assert (await forced.for_model("sonnet").complete(ask("sonnet"))).text == (
        "router:claude-3-5-sonnet-20241022"
    )
    replay = ReplayProvider()
    assert ProviderRegistry({}, lambda: CATALOG, force=replay).for_model("sonnet") is replay


def test_extra_providers_are_built_from_settings_and_may_not_shadow_builtins() -> None:
    base = make_settings("sqlite+aiosqlite:///unused.db")
    together = ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1")
    adapters = adapters_from_settings(base.model_copy(update={"providers": {"together": together}}))
    assert sorted(adapters) == ["together"]  # no key for openai / anthropic: not configured
    with pytest.raises(InvalidInput) as caught:
        adapters_from_settings(base.model_copy(update={"providers": {"openai": together}}))
    assert caught.value.field == "providers.openai"


def test_policy_refuses_an_alias_that_names_another_model() -> None:
    body = policy_named("default").body.replace(
        'aliases = ["gpt-4o-mini-2024-07-18"]', 'aliases = ["gpt-4o"]'
    )
    with pytest.raises(InvalidInput, match="already names model 'gpt-4o'"):
        parse_policy(body)


# ---- end to end: one grading run over the mixed ladder --------------------------------------

EXACT_CLASS = "classify"  # trivial tier: gpt-4o-mini; graded by the reference's own answer
JUDGED_CLASS = "generate_reply"  # standard tier: claude-3-5-haiku, escalated here
OVERRIDE = f"""
[[classes]]
match = "{EXACT_CLASS}"
grader = "exact"
"""


def _ids(n: int, *, shadow: bool) -> list[str]:
    """Decision ids the shadow split sends to a shadow probe (or not)."""
    found = []
    for i in range(1000):
        did = f"mixed-{i}"
        if (sample_point(did + ":shadow") < 0.5) == shadow:
            found.append(did)
        if len(found) == n:
            return found
    raise AssertionError("no ids")


def _upstream(hit: Hit) -> Reply:
    """Judges rate 8 through the schema; plain answer calls get "spam"."""
    if structured_request(hit) is not None:
        return verdict_reply(hit, {"explanation": "fine", "rating": 8})
    if hit.path == OPENAI_PATH:
        return Reply(body=openai_chat("cheap answer", model="gpt-4o-mini-2024-07-18"))
    return verdict_reply(hit, {}, text="spam")


async def test_mixed_ladder_sends_every_call_to_its_models_provider(
    database_url: str, wire: WireServer
) -> None:
    wire.respond(OPENAI_PATH, _upstream)
    wire.respond(ANTHROPIC_PATH, _upstream)
    from router.db import make_engine, session_factory

    engine = make_engine(database_url)
    sessions = session_factory(engine)
    await apply(sessions, parse_policy(policy_named("default").body + OVERRIDE))
    shadow_id, plain_id = _ids(1, shadow=True)[0], _ids(1, shadow=False)[0]
    async with sessions() as session:
        await change_class(session, JUDGED_CLASS, model="claude-3-5-haiku", status="escalated")
        now = utcnow()
        add_samples(
            session,
            [shadow_id, plain_id],
            task_class=JUDGED_CLASS,
            model="claude-3-5-haiku",
            at=now,
            output_text="haiku answer",
        )
        add_samples(
            session,
            ["exact-1"],
            task_class=EXACT_CLASS,
            model="gpt-4o-mini",
            at=now,
            output_text="spam",
        )
        await session.commit()
    await engine.dispose()

    async with running_service(
        database_url,
        None,
        reference_provider="catalog",
        openai_api_key=SecretStr(KEY),
        openai_base_url=wire.openai_base_url,
        anthropic_api_key=SecretStr(KEY),
        anthropic_base_url=wire.anthropic_base_url,
    ) as svc:
        run = await svc.evaluator.grade()
        async with svc.sessions() as session:
            grades = {g.decision_id: g for g in (await session.exec(select(Grade))).all()}

    assert (run.claimed, run.graded, run.failed) == (3, 3, 0)
    # OpenAI answered only the shadow probe (the cheaper model, by its own id); Anthropic
    # every judge call and the reference answer, by the dated id its API expects.
    assert [h.body["model"] for h in wire.hits(OPENAI_PATH)] == ["gpt-4o-mini"]
    assert {h.body["model"] for h in wire.hits(ANTHROPIC_PATH)} == {"claude-3-5-sonnet-20241022"}
    assert len(wire.hits(ANTHROPIC_PATH)) == 3  # two judge calls, one reference answer
    judged = [str(h.body) for h in wire.hits(ANTHROPIC_PATH) if structured_request(h)]
    assert sum("cheap answer" in j for j in judged) == 1  # the probe's answer was judged
    shadow, plain, exact = grades[shadow_id], grades[plain_id], grades["exact-1"]
    assert (shadow.model, shadow.shadow, shadow.verdict) == ("gpt-4o-mini", True, "agree")
    assert (plain.model, plain.shadow, plain.verdict) == ("claude-3-5-haiku", False, "agree")
    assert (exact.model, exact.grader, exact.verdict) == ("gpt-4o-mini", "exact", "agree")
    assert {g.reference_model for g in grades.values()} == {"claude-3-5-sonnet"}


async def test_dated_ids_reported_back_are_priced_as_the_catalog_model(
    database_url: str,
) -> None:
    async with running_service(database_url, "default") as svc:
        routed = []
        for task_type in ("classify", "code_generation"):
            r = await svc.client.post("/v1/route", json={"task_type": task_type, "input_tokens": 9})
            routed.append(r.json()["decision_id"])
        usage = {"prompt_tokens": 1_000_000, "completion_tokens": 0}
        reply = await svc.client.post(
            "/v1/outcomes",
            json=[
                {
                    "decision_id": routed[0],
                    "served_model": "gpt-4o-mini-2024-07-18",
                    "usage": usage,
                },
                {
                    "decision_id": routed[1],
                    "served_model": "claude-3-5-sonnet-20241022",
                    "usage": {"input_tokens": 1_000_000, "output_tokens": 0},
                },
            ],
        )
        assert reply.status_code == 200, reply.text
        costs = [r["cost_usd"] for r in reply.json()["results"]]
        assert costs == [pytest.approx(0.15), pytest.approx(3.00)]
        from router.models import Outcome

        async with svc.sessions() as session:
            served = set((await session.exec(select(Outcome.served_model))).all())
        assert served == {"gpt-4o-mini", "claude-3-5-sonnet"}
