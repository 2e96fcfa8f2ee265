"""Prompt compression without the gateway: what is never changed, what each compressor keeps,
the extraction guard, and the policy's compression keys. Contexts are real lost-in-the-middle
passages (datasets/lost_in_the_middle_nq.jsonl) where a test needs prose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.compression import compress_messages, compress_text
from router.compression.compressors import COMPRESSORS
from router.compression.guard import field_units, named_values
from router.compression.text import segment
from router.errors import PolicyError
from router.policy import parse_policy
from tests.test_gateway import POLICY

DATASETS = Path(__file__).resolve().parent.parent / "datasets"


def _nq(count: int) -> list[dict[str, Any]]:
    rows = []
    with (DATASETS / "lost_in_the_middle_nq.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == count:
                break
    return rows


PASSAGES = _nq(12)
CODE = "```python\ndef lookup(key):\n    return TABLE[key]  # the answer is here. Keep me.\n```"
SYSTEM = "You answer from the documents only. Cite the document number."
QUESTION = f"Question: {PASSAGES[0]['question']}?\nAnswer:"


def _context() -> str:
    docs = [
        f"Document [{i + 1}](Title: {p['gold']['title']}) {p['gold']['text']}"
        for i, p in enumerate(PASSAGES)
    ]
    return "\n".join(docs[:6]) + "\n\n" + CODE + "\n\n" + "\n".join(docs[6:])


def _messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Earlier notes:\n\n" + PASSAGES[1]["gold"]["text"]},
        {"role": "assistant", "content": PASSAGES[2]["gold"]["text"]},
        {
            "role": "user",
            "content": f"Answer from the search results.\n\n{_context()}\n\n{QUESTION}",
        },
    ]


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
@pytest.mark.parametrize(
    "pipeline",
    [
        ("redundancy",),
        ("query",),
        ("tfidf",),
        ("structural",),
        ("random",),
        ("redundancy", "query"),
    ],
)
def test_protected_parts_are_never_changed(pipeline: tuple[str, ...], ratio: float) -> None:
    messages = _messages()
    sent = json.loads(json.dumps(messages))
    result = compress_messages(messages, pipeline, ratio)
    assert messages == sent  # the caller's messages are copied, not changed in place
    out = result.messages
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0] == messages[0]  # the system prompt
    assert out[2] == messages[2]  # an assistant turn
    final = out[3]["content"]
    assert final.startswith("Answer from the search results.\n\n")  # the instruction
    assert final.endswith(f"\n\n{QUESTION}")  # the final question
    assert CODE in final  # the code block, whole
    if pipeline != ("redundancy",):
        assert result.status == "compressed"
        assert result.tokens <= ratio * result.original_tokens + len(CODE) // 4 + 1
        assert len(final) < len(messages[3]["content"])


def test_keeping_every_unit_gives_the_text_back() -> None:
    text = _context()
    seg = segment(text)
    assert seg.join(range(len(seg.units))) == text
    assert [seg.unit_text(i) for i, u in enumerate(seg.units) if u.code] == [CODE]
    # one paragraph per document line (each line is a long passage), the code block apart
    assert len({u.paragraph for u in seg.units}) == 13


def test_query_aware_scoring_keeps_the_answer_sentence_at_a_third() -> None:
    item = PASSAGES[0]  # who got the first nobel prize in physics -> Wilhelm Conrad Röntgen
    docs = [
        f"Document [{i + 1}](Title: {p['gold']['title']}) {p['gold']['text']}"
        for i, p in enumerate(PASSAGES[1:10])
    ]
    docs.insert(4, f"Document [5](Title: {item['gold']['title']}) {item['gold']['text']}")
    out = compress_text("\n".join(docs), item["question"], ["query"], 0.3)
    assert out.tokens <= 0.3 * out.original_tokens
    assert "Wilhelm Conrad Röntgen" in out.text


def test_redundancy_drops_the_repeated_paragraphs_only() -> None:
    a, b, c = (p["gold"]["text"] for p in PASSAGES[:3])
    near = a.replace("1901", "1902")  # one word differs: a near-duplicate
    text = "\n\n".join([a, b, a, near, c, b])
    out = compress_text(text, "anything", ["redundancy"], 0.5)
    assert out.text == "\n\n".join([a, b, c])


def test_structural_keeps_headings_the_start_and_the_end() -> None:
    body = [p["gold"]["text"] for p in PASSAGES[:10]]
    text = "# Report\n\n" + "\n\n".join(body[:5]) + "\n\n## Findings\n\n" + "\n\n".join(body[5:])
    out = compress_text(text, "q", ["structural"], 0.5)
    assert out.text.startswith("# Report\n\n" + body[0][:200])
    assert "## Findings" in out.text
    assert out.text.endswith(body[-1][-200:])
    assert body[4][:100] not in out.text  # the middle goes


def test_the_random_baseline_is_seeded() -> None:
    text = "\n\n".join(p["gold"]["text"] for p in PASSAGES)
    first = compress_text(text, "q", ["random"], 0.5)
    assert compress_text(text, "q", ["random"], 0.5) == first


def test_field_units_and_named_values() -> None:
    text = (
        "The meeting went well. Invoice INV-2024-0042 is due.\n\n"
        "owner: Dana Smith\nemail: dana@example.org\n\n| id | amount |\n| 7 | $12 |"
    )
    seg = segment(text)
    fields = {seg.unit_text(i) for i in field_units(seg)}
    assert fields == {
        "Invoice INV-2024-0042 is due.",
        "owner: Dana Smith",
        "email: dana@example.org",
        "| id | amount |",
        "| 7 | $12 |",
    }
    assert named_values('What does "Project Falcon" cost, per INV-2024-0042 or bob@x.org?') == [
        "Project Falcon",
        "INV-2024-0042",
        "bob@x.org",
    ]


def test_the_extraction_guard_keeps_field_sentences() -> None:
    prose = [p["gold"]["text"] for p in PASSAGES[3:9]]
    field_line = "customer_id: C-88231"
    text = "\n\n".join([*prose[:3], field_line, *prose[3:]])
    question = "What is the customer id?"
    unguarded = compress_text(text, question, ["query"], 0.3)
    guarded = compress_text(text, question, ["query"], 0.3, guard=True)
    assert field_line in guarded.text
    assert guarded.dropped == ()
    assert guarded.tokens < guarded.original_tokens  # prose without fields still goes
    assert unguarded.tokens <= 0.3 * unguarded.original_tokens


def test_a_request_whose_compression_would_drop_a_named_value_goes_uncompressed() -> None:
    prose = [p["gold"]["text"] for p in PASSAGES[:8]]
    # The named value sits in a sentence with no field-like token: the guard cannot keep it by
    # its fields, and the query has nothing else in common with it.
    holder = "The codename Falcon Crest belongs to the western warehouse."
    text = "\n\n".join([*prose[:4], holder, *prose[4:]])
    messages = [
        {"role": "user", "content": f"Extract it.\n\n{text}\n\nWhich site is 'Falcon Crest'?"}
    ]
    plain = compress_messages(messages, ["structural"], 0.3)
    assert plain.status == "compressed" and holder not in plain.messages[0]["content"]
    guarded = compress_messages(messages, ["structural"], 0.3, guard=True)
    assert guarded.status == "unchanged"
    assert guarded.messages == messages
    assert guarded.dropped == ["Falcon Crest"]
    assert guarded.reason == (
        "extraction guard: compression would drop 'Falcon Crest', which the question names"
    )


def test_a_question_alone_is_not_compressed() -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    result = compress_messages(messages, ["query"], 0.3)
    assert (result.status, result.reason, result.messages) == ("unchanged", "no context", messages)


def test_unknown_compressors_and_ratios_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown compressor 'lingua'"):
        compress_text("x", "q", ["lingua"], 0.5)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        compress_text("x", "q", ["query"], 0.0)
    assert "llmlingua2" not in COMPRESSORS  # the seam is there; no learned compressor ships


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('compression = ["qery"]', "classes[0].compression: unknown compressor 'qery'"),
        ('compression = ["random"]', "classes[0].compression: unknown compressor 'random'"),
        ('compression = ["query", "query"]', "classes[0].compression: a compressor is named twice"),
        ("compression_ratio = 0", "classes[0].compression_ratio"),
        ("compression_similarity = 1.5", "classes[0].compression_similarity"),
        ('compression_probe_model = "judge"', "classes[0].compression_probe_model"),
    ],
)
def test_bad_compression_settings_name_the_key(setting: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(POLICY + f'\n[[classes]]\nmatch = "qa*"\n{setting}\n')
    assert message in str(caught.value)


def test_compression_settings_merge_by_class() -> None:
    policy = parse_policy(
        POLICY
        + '\n[[classes]]\nmatch = "qa*"\ncompression = ["redundancy", "query"]\n'
        + "compression_ratio = 0.4\nextraction_guard = true\n"
    )
    qa = policy.settings_for("qa")
    assert (qa.compression, qa.compression_ratio, qa.extraction_guard) == (
        ["redundancy", "query"],
        0.4,
        True,
    )
    other = policy.settings_for("classify")
    assert (other.compression, other.compression_ratio, other.extraction_guard) == ([], 0.5, None)
