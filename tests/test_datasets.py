"""The JSONL loaders: every shipped file loads as its manifest says, and a bad line is named by
file, line number and field path (an InvalidInput with ``field`` set)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from evaluator.calibration import load_calibration_set
from evaluator.datasets import (
    HeldOutItem,
    RecordedJudge,
    RecordedOutput,
    load_held_out,
    load_judge_prompts,
    read_jsonl,
)
from router.errors import InvalidInput
from tests.conftest import DATASETS

CHEAP, REFERENCE = "mixtral-8x7b-instruct", "gpt-4-1106-preview"

ITEM: dict[str, Any] = {
    "id": "mt_bench/81/1",
    "dataset": "mt_bench",
    "task_type": "mt_bench.writing",
    "messages": [{"role": "user", "content": "Write a haiku."}],
    "reference_answer": None,
    "gold": None,
    "outputs": {
        CHEAP: {
            "text": " Leaves fall.",
            "correct": None,
            "judge": {
                "model": "gpt-4",
                "prompt_name": "single-v1",
                "user_prompt": "[Question] ...",
                "judgment": "Rating: [[6]]",
                "score": 6,
            },
        },
        REFERENCE: {"text": "Autumn.", "correct": True, "judge": None},
    },
}

PAIR: dict[str, Any] = {
    "id": "llmbar/Natural/0",
    "dataset": "llmbar",
    "subset": "Natural",
    "input": "Say hi.",
    "output_1": "Hi.",
    "output_2": "Bye.",
    "human": [1],
    "judges": {"GPT-4/Vanilla": {"order_12": 1, "order_21": 2}},
}


def item(n: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid held-out line (id ``mt_bench/<80 + n>/1``) with top-level ``changes``."""
    return {**copy.deepcopy(ITEM), "id": f"mt_bench/{80 + n}/1", **changes}


def write(tmp_path: Path, *lines: str | dict[str, Any]) -> Path:
    """A JSONL file of ``lines`` (a dict is dumped, a str written as is), one a line."""
    path = tmp_path / "x.jsonl"
    text = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        load_held_out(path)
    return caught.value


# ---- the shipped files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    json.loads((DATASETS / "manifest.json").read_text(encoding="utf-8")),
    ids=lambda e: str(e["name"]),
)
def test_every_shipped_file_loads_with_its_manifest_row_count(entry: dict[str, Any]) -> None:
    path = DATASETS / entry["file"]
    if entry["kind"] == "held_out":
        held_out = load_held_out(path)
        assert (held_out.name, len(held_out.items)) == (entry["name"], entry["rows"])
        assert held_out.task_types == entry["task_types"]
        assert all(set(i.outputs) == set(entry["models"].values()) for i in held_out.items)
    elif entry["kind"] == "judge_calibration" and entry["name"] != "llmbar_statistics":
        assert len(load_calibration_set(path).items) == entry["rows"]
    elif entry["kind"] == "judge_prompts":
        assert len(load_judge_prompts(path)) == entry["rows"] == len(load_judge_prompts())
    else:  # llmbar_statistics, intents: read without a line shape
        assert len(list(read_jsonl(path))) == entry["rows"]


def test_a_line_loads_into_the_dataclasses(tmp_path: Path) -> None:
    got = load_held_out(write(tmp_path, item())).items[0]
    judge = RecordedJudge("gpt-4", "single-v1", "[Question] ...", "Rating: [[6]]", 6.0)
    assert got == HeldOutItem(
        "mt_bench/81/1",
        "mt_bench",
        "mt_bench.writing",
        [{"role": "user", "content": "Write a haiku."}],
        None,
        None,
        {
            CHEAP: RecordedOutput(" Leaves fall.", None, judge),
            REFERENCE: RecordedOutput("Autumn.", True, None),
        },
    )
    recorded = got.outputs[CHEAP].judge
    assert recorded is not None and type(recorded.score) is float
    assert got.reference_turns == []


def test_reference_turns_follow_the_earlier_turns(tmp_path: Path) -> None:
    first = item(21, reference_answer="ref 1")
    second = item(21, id="mt_bench/101/2", reference_answer="ref 2")
    items = load_held_out(write(tmp_path, second, first)).items
    assert [i.reference_turns for i in items] == [["ref 1", "ref 2"], ["ref 1"]]


# ---- a bad line: file, line, field -------------------------------------------------------------


def test_a_mistyped_field_names_file_line_and_field_path(tmp_path: Path) -> None:
    bad = item(3)
    bad["outputs"][REFERENCE]["correct"] = "true"  # a string is not coerced to a boolean
    path = write(tmp_path, item(1), item(2), bad)
    err = load_error(path)
    assert err.message == (
        f"{path} line 3: outputs.{REFERENCE}.correct: Input should be a valid boolean"
    )
    assert err.field == f"outputs.{REFERENCE}.correct"


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"id": 7}, "id", "Input should be a valid string"),
        ({"gold": 18}, "gold", "Input should be a valid string"),
        ({"messages": []}, "messages", "List should have at least 1 item after validation, not 0"),
        ({"messages": [{"content": "hi"}]}, "messages[0]", "a message needs a string 'role'"),
        ({"messages": "hi"}, "messages", "Input should be a valid array"),
        ({"outputs": {CHEAP: "yes"}}, f"outputs.{CHEAP}", "Input should be an object"),
    ],
)
def test_mistyped_fields(tmp_path: Path, change: dict[str, Any], field: str, problem: str) -> None:
    path = write(tmp_path, item(**change))
    err = load_error(path)
    assert (err.message, err.field) == (f"{path} line 1: {field}: {problem}", field)


def test_a_judge_score_must_be_a_number_not_a_boolean(tmp_path: Path) -> None:
    bad = item()
    bad["outputs"][CHEAP]["judge"]["score"] = True
    err = load_error(write(tmp_path, bad))
    assert err.field == f"outputs.{CHEAP}.judge.score"
    assert err.message.endswith(": Input should be a valid number")


def test_a_missing_field_is_named(tmp_path: Path) -> None:
    top = item(2)
    del top["task_type"]
    path = write(tmp_path, item(1), top)
    err = load_error(path)
    assert (err.message, err.field) == (f"{path} line 2: task_type: Field required", "task_type")

    nested = item()
    del nested["outputs"][CHEAP]["judge"]["user_prompt"]
    err = load_error(write(tmp_path, nested))
    assert err.field == f"outputs.{CHEAP}.judge.user_prompt"
    assert err.message.endswith(" line 1: " + err.field + ": Field required")


def test_a_null_the_format_does_not_allow_is_refused(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, item(dataset=None)))
    assert err.field == "dataset"
    assert err.message.endswith(" line 1: dataset: Input should be a valid string")


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, item(notes="hand-checked"))
    err = load_error(path)
    assert (err.message, err.field) == (
        f"{path} line 1: notes: Extra inputs are not permitted",
        "notes",
    )
    nested = item()
    nested["outputs"][REFERENCE]["score"] = 9
    err = load_error(write(tmp_path, nested))
    assert (err.field, err.message.rsplit(": ", 1)[1]) == (
        f"outputs.{REFERENCE}.score",
        "Extra inputs are not permitted",
    )


def test_reference_turns_are_not_a_line_field(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, item(reference_turns=["forged"])))
    assert err.field == "reference_turns"


def test_several_errors_on_a_line_name_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, item(id=1, dataset=2, task_type=3))
    err = load_error(path)
    assert err.message == f"{path} line 1: id: Input should be a valid string (and 2 more)"


def test_a_line_that_is_not_json(tmp_path: Path) -> None:
    path = write(tmp_path, item(1), '{"id": "mt_bench/82/1",')
    err = load_error(path)
    assert err.field == "line"
    assert err.message.startswith(f"{path} line 2: not JSON: ")
    assert "line 1 column" not in err.message  # the column is within line 2


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "null"])
def test_a_line_that_is_not_an_object(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, line)
    err = load_error(path)
    assert (err.message, err.field) == (f"{path} line 1: a line must be a JSON object", "line")
    with pytest.raises(InvalidInput, match="line 1: a line must be a JSON object"):
        list(read_jsonl(path))


def test_blank_lines_are_skipped_and_still_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "", item(1), "   ", item(2))
    assert [i.id for i in load_held_out(path).items] == ["mt_bench/81/1", "mt_bench/82/1"]
    path = write(tmp_path, item(1), "", "\t", item(2, gold=2))
    assert load_error(path).message.startswith(f"{path} line 4: gold: ")


def test_crlf_line_endings_load(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"".join(json.dumps(item(n)).encode() + b"\r\n" for n in (1, 2)))
    assert len(load_held_out(path).items) == 2


def test_a_line_separator_inside_a_string_does_not_split_the_line(tmp_path: Path) -> None:
    path = tmp_path / "u2028.jsonl"
    line = json.dumps(item(messages=[{"role": "user", "content": "a\u2028b"}]), ensure_ascii=False)
    path.write_text(line + "\n", encoding="utf-8")
    assert load_held_out(path).items[0].messages[0]["content"] == "a\u2028b"


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(item()).encode() + b"\n\n" + b'{"id": "caf\xe9"}\n')
    err = load_error(path)
    assert (err.message, err.field) == (f"{path} line 3: not UTF-8 text", "line")


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, item(1), item(2), item(1))
    err = load_error(path)
    assert err.message == f"{path} line 3: id: duplicate item id 'mt_bench/81/1' (first on line 1)"
    assert err.field == "id"


@pytest.mark.parametrize("lines", [(), ("",), ("", "  ")])
def test_a_file_without_items(tmp_path: Path, lines: tuple[str, ...]) -> None:
    path = write(tmp_path, *lines)
    err = load_error(path)
    assert (err.message, err.field) == (f"{path}: no items", "dataset")


def test_a_missing_file(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.jsonl")
    assert err.field == "dataset" and err.message.startswith("cannot read data set ")


# ---- judge prompts and calibration lines -----------------------------------------------------


def test_a_bad_judge_prompt_line_is_named(tmp_path: Path) -> None:
    prompts = (DATASETS.parent / "evaluator/graders/judge_prompts.jsonl").read_text("utf-8")
    first, second = (json.loads(line) for line in prompts.splitlines()[:2])
    del second["prompt_template"]
    path = write(tmp_path, first, second)
    with pytest.raises(InvalidInput) as caught:
        load_judge_prompts(path)
    assert (caught.value.message, caught.value.field) == (
        f"{path} line 2: prompt_template: Field required",
        "prompt_template",
    )


def calibration_error(tmp_path: Path, *lines: str | dict[str, Any]) -> InvalidInput:
    path = write(tmp_path, *lines)
    with pytest.raises(InvalidInput) as caught:
        load_calibration_set(path)
    assert caught.value.message.startswith(f"{path} line ")
    return caught.value


def test_a_calibration_line_loads(tmp_path: Path) -> None:
    cal = load_calibration_set(write(tmp_path, PAIR))
    [got] = cal.items
    assert (cal.name, got.id, got.subset, got.klass, got.human) == (
        "llmbar",
        "llmbar/Natural/0",
        "Natural",
        "Natural",
        (1,),
    )
    assert [(v.value, v.status) for v in got.verdicts["GPT-4/Vanilla"]] == [(1, "ok"), (2, "ok")]


@pytest.mark.parametrize(
    ("verdict", "problem"),
    [
        (3, "must be 1, 2 or 0 (tie)"),
        (True, "Input should be a valid integer"),
        ("1", "Input should be a valid integer"),
        (1.0, "Input should be a valid integer"),
    ],
)
def test_a_verdict_outside_the_codes_names_judge_and_order(
    tmp_path: Path, verdict: object, problem: str
) -> None:
    bad = copy.deepcopy(PAIR)
    bad["judges"]["GPT-4/Vanilla"]["order_21"] = verdict
    err = calibration_error(tmp_path, PAIR, bad)
    assert err.field == "judges.GPT-4/Vanilla.order_21"
    assert err.message.endswith(f" line 2: {err.field}: {problem}")


def test_a_bad_human_label_is_named(tmp_path: Path) -> None:
    err = calibration_error(tmp_path, {**PAIR, "human": [1, 5]})
    assert (err.field, err.message.rsplit(": ", 1)[1]) == ("human[1]", "must be 1, 2 or 0 (tie)")


def test_a_calibration_line_missing_or_adding_a_field(tmp_path: Path) -> None:
    missing = {k: v for k, v in PAIR.items() if k != "id"}
    assert calibration_error(tmp_path, missing).field == "id"
    extra = copy.deepcopy(PAIR)
    extra["judges"]["GPT-4/Vanilla"]["order_13"] = 1
    err = calibration_error(tmp_path, extra)
    assert err.field == "judges.GPT-4/Vanilla.order_13"
    assert err.message.endswith(": Extra inputs are not permitted")
    assert calibration_error(tmp_path, PAIR, "{oops").field == "line"


def test_reference_turns_belong_to_conversations_only() -> None:
    """mt_bench/<q>/<turn> items carry the references of their turns; a flat <dataset>/<n> id is
    a question number, so GSM8K items carry none."""
    from tests.conftest import DATASETS

    mt = {i.id: i for i in load_held_out(DATASETS / "mt_bench.jsonl").items}
    math = mt["mt_bench/111/2"]
    assert len(math.reference_turns) == 2
    assert math.reference_turns[0] == mt["mt_bench/111/1"].reference_answer
    gsm = load_held_out(DATASETS / "gsm8k.jsonl").items
    assert sum(len(i.reference_turns) for i in gsm) == 0
