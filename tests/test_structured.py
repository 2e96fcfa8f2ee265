"""Structured judge verdicts: JSON schema (OpenAI) and forced tool use (Anthropic).

Through the real SDKs against the loopback wire server (:mod:`tests.wire`): what the judge
graders ask for on the wire, how each API's structured reply becomes a verdict, and how a reply
that is not the expected JSON falls back to the MT-Bench text parsers. Providers without
structured output (the replay provider) must keep getting the plain template; that is checked
here directly and by ``tests/test_graders.py`` / ``tests/test_replay_main_job.py``, whose
recorded MT-Bench judgments only match the exact prompts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from evaluator.datasets import load_judge_prompts
from evaluator.graders import GRADERS, GraderEnv, GradeResult, SampleView
from evaluator.graders._judge import PAIRWISE_SCHEMA, RATING_SCHEMA, JudgeSingleGrader
from evaluator.parsing import ParsedPairwise, ParsedRating, parse_pairwise_json, parse_rating_json
from router.policy import ClassSettings
from router.pricing import Usage
from router.providers import (
    AnthropicProvider,
    ChatRequest,
    ChatResponse,
    OpenAIProvider,
    Provider,
    ReplayProvider,
)
from tests.wire import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Hit,
    Reply,
    WireServer,
    anthropic_message,
    anthropic_tool_use,
    openai_chat,
    structured_request,
    verdict_reply,
)

KEY = "sk-wire-test"
PROMPTS = load_judge_prompts()
SAMPLE = SampleView(
    "d-1",
    "summarize",
    "gpt-4o-mini",
    [{"role": "user", "content": "Summarise: the cat sat on the mat."}],
    "A cat sat on a mat.",
)
REFERENCE_ANSWER = "The cat sat on the mat."


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


@dataclass
class Api:
    name: str
    wire: WireServer
    made: list[Provider]

    @property
    def path(self) -> str:
        return OPENAI_PATH if self.name == "openai" else ANTHROPIC_PATH

    def provider(self) -> Provider:
        provider: Provider
        if self.name == "openai":
            provider = OpenAIProvider(api_key=SecretStr(KEY), base_url=self.wire.openai_base_url)
        else:
            provider = AnthropicProvider(
                api_key=SecretStr(KEY), base_url=self.wire.anthropic_base_url
            )
        self.made.append(provider)
        return provider

    def env(self) -> GraderEnv:
        provider = self.provider()
        return GraderEnv(provider_for=lambda _model: provider, items={}, judge_prompts=PROMPTS)

    def hits(self) -> list[Hit]:
        return self.wire.hits(self.path)

    def text(self, text: str) -> Reply:
        """A plain text reply (no JSON content / no tool_use block)."""
        if self.name == "openai":
            return Reply(body=openai_chat(text))
        return Reply(body=anthropic_message(text))


@pytest.fixture(params=["openai", "anthropic"])
async def api(request: pytest.FixtureRequest, wire: WireServer) -> AsyncIterator[Api]:
    made: list[Provider] = []
    yield Api(str(request.param), wire, made)
    for provider in made:
        await provider.aclose()


async def single(api: Api, answer: Callable[[Hit], Reply]) -> GradeResult:
    api.wire.respond(api.path, answer)
    return await GRADERS["judge_single"].grade(SAMPLE, ClassSettings(), "ref-model", api.env())


def user_prompt(hit: Hit) -> str:
    return str(hit.body["messages"][-1]["content"])


def template_prompt() -> str:
    """The plain MT-Bench single-v1 prompt for :data:`SAMPLE`."""
    _, _, prompt = JudgeSingleGrader().build_prompt(SAMPLE, _env_without_provider())
    return prompt


def _env_without_provider() -> GraderEnv:
    def no_provider(_model: str) -> Provider:
        raise AssertionError("no call expected")

    return GraderEnv(provider_for=no_provider, items={}, judge_prompts=PROMPTS)


# ---- the request on the wire -----------------------------------------------------------------


def test_structured_output_flags() -> None:
    assert OpenAIProvider.supports_structured_output is True
    assert AnthropicProvider.supports_structured_output is True
    assert ReplayProvider.supports_structured_output is False
    assert Provider.supports_structured_output is False


async def test_judge_single_asks_for_the_rating_schema(api: Api) -> None:
    result = await single(api, lambda hit: verdict_reply(hit, {"explanation": "ok", "rating": 8}))
    assert (result.verdict, result.parse_status, result.score) == ("agree", "ok_structured", 8.0)
    [hit] = api.hits()
    if api.name == "openai":
        assert hit.body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "judge_rating", "schema": RATING_SCHEMA, "strict": True},
        }
        assert "tools" not in hit.body
    else:
        [tool] = hit.body["tools"]
        assert (tool["name"], tool["input_schema"]) == ("judge_rating", RATING_SCHEMA)
        assert tool["description"]
        assert hit.body["tool_choice"] == {"type": "tool", "name": "judge_rating"}
        assert "response_format" not in hit.body
    # The MT-Bench template is sent unchanged, with one closing paragraph about the schema.
    prompt = user_prompt(hit)
    assert prompt.startswith(template_prompt() + "\n\n")
    assert "judge_rating schema" in prompt.removeprefix(template_prompt())
    assert json.loads(result.raw_output) == {"explanation": "ok", "rating": 8}


async def test_structured_low_rating_is_a_disagreement(api: Api) -> None:
    result = await single(api, lambda hit: verdict_reply(hit, {"explanation": "no", "rating": 3}))
    assert (result.verdict, result.parse_status, result.score) == ("disagree", "ok_structured", 3.0)


@pytest.mark.parametrize("rating", [0, 11, 90, -1])
async def test_out_of_range_json_rating_is_invalid_not_clamped(api: Api, rating: int) -> None:
    # The explanation carries a readable "[[8]]": a well-formed JSON verdict is not overridden
    # by the text, and an out-of-range rating is never clamped.
    value = {"explanation": "Faithful. Rating: [[8]]", "rating": rating}
    result = await single(api, lambda hit: verdict_reply(hit, value))
    assert (result.verdict, result.parse_status, result.score) == ("invalid", "out_of_range", None)


# ---- falling back to the text parsers --------------------------------------------------------


async def test_plain_text_reply_to_a_structured_request_falls_back(api: Api) -> None:
    # OpenAI-compatible servers may ignore response_format; a model may answer in text.
    result = await single(api, lambda _hit: api.text("Concise and faithful. Rating: [[7]]"))
    assert (result.verdict, result.parse_status, result.score) == ("agree", "ok", 7.0)
    assert structured_request(api.hits()[0]) == "judge_rating"


async def test_malformed_json_falls_back_to_text_parsing(wire: WireServer) -> None:
    api = Api("openai", wire, [])
    broken = '{"explanation": "Faithful. Rating: [[7]]", "rating": '
    result = await single(api, lambda _hit: Reply(body=openai_chat(broken)))
    await api.made[0].aclose()
    assert (result.verdict, result.parse_status, result.score) == ("agree", "ok", 7.0)


@pytest.mark.parametrize("rating", [None, "8", True])
async def test_json_without_a_numeric_rating_falls_back(api: Api, rating: Any) -> None:
    value: dict[str, Any] = {"explanation": "Faithful. Rating: [[6]]"}
    if rating is not None:
        value["rating"] = rating
    result = await single(api, lambda hit: verdict_reply(hit, value))
    assert (result.verdict, result.parse_status, result.score) == ("disagree", "ok", 6.0)


async def test_unreadable_json_without_text_verdict_is_invalid(api: Api) -> None:
    result = await single(api, lambda hit: verdict_reply(hit, {"explanation": "fine"}))
    assert (result.verdict, result.parse_status) == ("invalid", "no_rating")


# ---- a reply without a verdict on the structured path ----------------------------------------


async def test_truncated_structured_reply_is_invalid(api: Api) -> None:
    def cut(_hit: Hit) -> Reply:
        if api.name == "openai":
            return Reply(body=openai_chat('{"explanation": "The answer', finish_reason="length"))
        body = anthropic_tool_use({}, name="judge_rating", stop_reason="max_tokens")
        return Reply(body=body)

    result = await single(api, cut)
    assert (result.verdict, result.parse_status) == ("invalid", "truncated")


async def test_structured_refusal_is_refused(api: Api) -> None:
    def refuse(_hit: Hit) -> Reply:
        if api.name == "openai":  # Structured Outputs refusals: content null, refusal set
            return Reply(body=openai_chat(None, refusal="I can't help with that."))
        return Reply(body=anthropic_message(None, stop_reason="refusal"))

    result = await single(api, refuse)
    assert (result.verdict, result.parse_status) == ("refused", "refused")


# ---- the adapters' replies -------------------------------------------------------------------


async def test_adapters_return_the_json_as_text(api: Api) -> None:
    value = {"explanation": "é ok", "rating": 9}
    api.wire.respond(api.path, lambda hit: verdict_reply(hit, value))
    request = ChatRequest(
        model="ref-model",
        messages=[{"role": "user", "content": "rate"}],
        verdict_schema=RATING_SCHEMA,
        verdict_name="judge_rating",
    )
    reply = await api.provider().complete(request)
    assert json.loads(reply.text) == value
    assert reply.finish_reason == "stop"  # Anthropic's stop_reason tool_use, forced, is a stop


async def test_no_schema_no_structured_fields_on_the_wire(api: Api) -> None:
    api.wire.enqueue(api.path, api.text("hello"))
    await api.provider().complete(
        ChatRequest(model="ref-model", messages=[{"role": "user", "content": "hi"}])
    )
    [hit] = api.hits()
    assert not {"response_format", "tools", "tool_choice"} & set(hit.body)


# ---- judge_pairwise --------------------------------------------------------------------------


def pairwise_responder(verdicts: list[str | None]) -> Callable[[Hit], Reply]:
    """The reference answer for plain requests; then ``verdicts`` in turn for the two orders
    (None answers that order in text with "[[B]]")."""
    queue = list(verdicts)

    def respond(hit: Hit) -> Reply:
        if structured_request(hit) is None:  # only the reference answer is asked for in text
            return verdict_reply(hit, {}, text=REFERENCE_ANSWER)
        verdict = queue.pop(0)
        if verdict is None:
            text = "B is better. [[B]]"
            if hit.path == OPENAI_PATH:
                return Reply(body=openai_chat(text))
            return Reply(body=anthropic_message(text))
        return verdict_reply(hit, {"explanation": "compared", "verdict": verdict})

    return respond


async def pairwise(api: Api, verdicts: list[str | None]) -> GradeResult:
    api.wire.respond(api.path, pairwise_responder(verdicts))
    return await GRADERS["judge_pairwise"].grade(SAMPLE, ClassSettings(), "ref-model", api.env())


async def test_pairwise_asks_for_the_verdict_schema_in_both_orders(api: Api) -> None:
    result = await pairwise(api, ["A", "B"])  # graded answer better in both orders
    assert (result.verdict, result.parse_status, result.score) == ("agree", "ok_structured", 1.0)
    assert result.position_flip is False
    own, first, second = api.hits()
    assert structured_request(own) is None  # the reference answer is plain text
    assert structured_request(first) == structured_request(second) == "judge_verdict"
    for hit in (first, second):
        if api.name == "openai":
            assert hit.body["response_format"]["json_schema"]["schema"] == PAIRWISE_SCHEMA
        else:
            assert hit.body["tools"][0]["input_schema"] == PAIRWISE_SCHEMA
        assert "judge_verdict schema" in user_prompt(hit)


async def test_pairwise_structured_reference_win_and_flip(api: Api) -> None:
    result = await pairwise(api, ["B", "A"])  # reference better in both orders
    assert (result.verdict, result.parse_status, result.score) == ("disagree", "ok_structured", 0.0)
    flip = await pairwise(api, ["A", "A"])  # A both times: position bias
    assert (flip.verdict, flip.parse_status, flip.position_flip) == ("agree", "position_flip", True)


async def test_pairwise_with_one_order_in_text_is_ok(api: Api) -> None:
    # Order 1 (graded answer as A) through the schema: "A"; order 2 (graded answer as B) read
    # from the text "[[B]]": the graded answer wins both, but one verdict came from text.
    consistent = await pairwise(api, ["A", None])
    assert (consistent.verdict, consistent.parse_status, consistent.score) == ("agree", "ok", 1.0)
    # Order 1 a tie (JSON "C"), order 2 the graded answer (text): the orders disagree.
    flip = await pairwise(api, ["C", None])
    assert (flip.parse_status, flip.position_flip) == ("position_flip", True)


async def test_pairwise_out_of_enum_verdict_falls_back(api: Api) -> None:
    result = await pairwise(api, ["D", "B"])  # "D" is no verdict; its JSON has no [[X]] either
    assert (result.verdict, result.parse_status) == ("invalid", "no_verdict")


# ---- providers without structured output -----------------------------------------------------


class Plain(Provider):
    """A provider without structured output that records requests (like the replay one)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        return ChatResponse(self.text, request.model, "stop", Usage(10, 2))


async def test_plain_provider_gets_the_exact_template_and_text_parsing() -> None:
    provider = Plain('{"explanation": "x", "rating": 9} Rating: [[4]]')
    env = GraderEnv(provider_for=lambda _m: provider, items={}, judge_prompts=PROMPTS)
    result = await GRADERS["judge_single"].grade(SAMPLE, ClassSettings(), "ref-model", env)
    [request] = provider.requests
    assert request.verdict_schema is None
    assert request.messages == [{"role": "user", "content": template_prompt()}]
    # No JSON path without structured output: the text parser reads [[4]].
    assert (result.verdict, result.parse_status, result.score) == ("disagree", "ok", 4.0)


# ---- the JSON parsers ------------------------------------------------------------------------


def rating(text: str, finish_reason: str = "stop") -> ParsedRating:
    parsed = parse_rating_json(text, finish_reason=finish_reason)
    assert parsed is not None, text
    return parsed


def verdict(text: str, finish_reason: str = "stop") -> ParsedPairwise:
    parsed = parse_pairwise_json(text, finish_reason=finish_reason)
    assert parsed is not None, text
    return parsed


def test_parse_rating_json() -> None:
    assert rating('{"explanation": "", "rating": 8}') == ParsedRating(8.0, "ok")
    assert rating(' {"rating": 8.0}\n') == ParsedRating(8.0, "ok")
    assert rating('{"rating": 1}') == ParsedRating(1.0, "ok")
    # Not the expected JSON: None, so the grader falls back to the text parsers.
    for bad in ("Rating: [[8]]", '{"rating": "8"}', '{"rating": true}', "[8]", '{"r": 1}', "{"):
        assert parse_rating_json(bad) is None, bad
    # Out of range (or not finite, or past float range): invalid, never clamped.
    for out in ("0", "11", "10.5", "-3", "1e400", "1" + "0" * 400):
        assert rating('{"rating": ' + out + "}") == ParsedRating(None, "out_of_range"), out
    assert rating('{"rating": 8}', "length").status == "truncated"
    assert rating('{"rating": 8}', "refusal").status == "refused"
    assert rating("  ").status == "empty"


def test_parse_pairwise_json() -> None:
    for winner in "ABC":
        assert verdict('{"explanation": "", "verdict": "' + winner + '"}').winner == winner
    for bad in ('{"verdict": "a"}', '{"verdict": "AB"}', '{"verdict": ["A"]}', "[[A]]", "{}"):
        assert parse_pairwise_json(bad) is None, bad
    assert verdict('{"verdict": "A"', "length").status == "truncated"
    assert verdict("", "refusal").status == "refused"
