"""Convert the recorded public data in ``shared/data`` into tierwise's JSONL datasets, and the
MT-Bench judge prompt templates the graders ship with (``evaluator/graders/judge_prompts.jsonl``,
written at ``<out>/../evaluator/graders/``).

Usage::

    python scripts/convert_datasets.py --source ../shared/data --out datasets

Standard library only. The output is deterministic: the same input gives byte-identical
files (keys sorted, ``ensure_ascii=False``, one JSON object per line, ``\\n`` endings, no
timestamps). Any row that cannot be converted aborts the run with the file and row named;
nothing is dropped silently. See ``datasets/README.md`` for the formats.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import math
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = Any

CHEAP = "mixtral-8x7b-instruct"
REFERENCE = "gpt-4-1106-preview"
# model key in our files -> column / model name in the RouteLLM files
ROUTELLM_MODELS: dict[str, str] = {
    CHEAP: "mistralai/Mixtral-8x7B-Instruct-v0.1",
    REFERENCE: "gpt-4-1106-preview",
}

ROUTELLM_EVALS = "routellm/routellm/evals"
MT_BENCH_JUDGEMENTS = f"{ROUTELLM_EVALS}/mt_bench/judgements.jsonl"
MT_BENCH_QUESTIONS = f"{ROUTELLM_EVALS}/mt_bench/question.jsonl"
MT_BENCH_JUDGE_PROMPTS = "mt_bench/fastchat/llm_judge/data/judge_prompts.jsonl"
MT_BENCH_REFERENCES = "mt_bench/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl"
GSM8K_RESPONSES = f"{ROUTELLM_EVALS}/gsm8k/gsm8k_responses.csv"
GSM8K_TEST = f"{ROUTELLM_EVALS}/gsm8k/test.jsonl"
MMLU_DIR = f"{ROUTELLM_EVALS}/mmlu/responses"
LLMBAR_ROOT = "llmbar/Dataset"
LLMBAR_SUBSETS: tuple[str, ...] = (
    "Natural",
    "Adversarial/GPTInst",
    "Adversarial/GPTOut",
    "Adversarial/Manual",
    "Adversarial/Neighbor",
    "Processed/FairEval",
    "Processed/LLMEval^2",
    "Processed/MT-Bench",
)
PANDALM_TESTSET = "pandalm/data/testset-v1.json"
PANDALM_GPT = "pandalm/data/gpt-3.5-turbo-testset-v1.json"
PANDALM_7B = "pandalm/data/pandalm-7b-testset-v1.json"
CLINC_DATA = "clinc150/data/data_full.json"
BANKING_TEST = "banking77/banking_data/test.csv"
LITM_NQ = "lost_in_the_middle/qa_data/nq-open-oracle.jsonl.gz"
LITM_KV = "lost_in_the_middle/kv_retrieval_data/kv-retrieval-75_keys.jsonl.gz"
LITM_DISTRACTORS = 19  # a 20-document context; its first 9 make the 10-document one
LITM_KV_ITEMS = 200  # of 500: keeps the converted file near 1.2 MB
# The judge prompt templates are code's data, not a held-out set: they ship in the wheel with the
# graders. Written relative to --out as a repository lays them out (manifest ``file`` is too).
JUDGE_PROMPTS_FILE = "../evaluator/graders/judge_prompts.jsonl"

LICENSES: dict[str, str] = {
    "routellm": "routellm/LICENSE",
    "mt_bench": "mt_bench/LICENSE",
    "llmbar": "llmbar/LICENSE",
    "pandalm": "pandalm/LICENSE",
    "clinc150": "clinc150/LICENSE",
    "banking77": "banking77/LICENSE",
    "lost_in_the_middle": "lost_in_the_middle/LICENSE",
}

SOURCES: dict[str, dict[str, str]] = {
    "routellm": {
        "origin": "https://github.com/lm-sys/RouteLLM",
        "commit": "0b64fdafe049e596a3f5657c219329f24af24198",
    },
    "mt_bench": {
        "origin": "https://github.com/lm-sys/FastChat",
        "commit": "0e6d3e4beaab66f4d3f93db72541a4abab8af28d",
    },
    "llmbar": {
        "origin": "https://github.com/princeton-nlp/LLMBar",
        "commit": "900616bff90b6c6c8e1681f7d079250637c55992",
    },
    "pandalm": {
        "origin": "https://github.com/WeOpenML/PandaLM",
        "commit": "3871806e72b4832f815ecafd24d3503c73403f48",
    },
    "clinc150": {
        "origin": "https://github.com/clinc/oos-eval",
        "commit": "828f8093932c8fe6ca7936c3d2e52903b1c523de",
    },
    "banking77": {
        "origin": "https://github.com/PolyAI-LDN/task-specific-datasets",
        "commit": "57ec275d8078af65b7731c2a98be812d844a6d6b",
    },
    "lost_in_the_middle": {
        "origin": "https://github.com/nelson-liu/lost-in-the-middle",
        "commit": "29b8a6d042ce29abccee3db1a73171a107d7e6af",
    },
}


class ConversionError(Exception):
    """A source row could not be converted. Names the file and the row."""

    def __init__(self, path: Path | str, row: int | str | None, message: str) -> None:
        if row is None:
            where = f"{path}"
        elif isinstance(row, int):
            where = f"{path} row {row}"  # 0-based data row (CSV rows exclude the header)
        else:
            where = f"{path} {row}"  # e.g. "line 8" (1-based JSONL line), "idx 114"
        super().__init__(f"{where}: {message}")


def log(message: str) -> None:
    print(message, file=sys.stderr)


# --------------------------------------------------------------------------- readers


def read_json(path: Path) -> JSON:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConversionError(path, None, f"cannot read JSON: {exc}") from exc


def read_jsonl(path: Path) -> list[dict[str, JSON]]:
    rows: list[dict[str, JSON]] = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    raise ConversionError(path, f"line {number}", "blank line")
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ConversionError(path, f"line {number}", "not a JSON object")
                rows.append(value)
    except OSError as exc:
        raise ConversionError(path, None, f"cannot read: {exc}") from exc
    except ValueError as exc:
        raise ConversionError(path, f"line {len(rows) + 1}", f"bad JSON: {exc}") from exc
    return rows


def read_jsonl_gz(path: Path) -> list[dict[str, JSON]]:
    rows: list[dict[str, JSON]] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            for number, line in enumerate(handle, start=1):
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ConversionError(path, f"line {number}", "not a JSON object")
                rows.append(value)
    except OSError as exc:
        raise ConversionError(path, None, f"cannot read: {exc}") from exc
    except ValueError as exc:
        raise ConversionError(path, f"line {len(rows) + 1}", f"bad JSON: {exc}") from exc
    return rows


def read_csv(path: Path, expected: Iterable[str]) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    expected_fields = list(expected)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != expected_fields:
                raise ConversionError(
                    path, "header", f"columns {reader.fieldnames} != {expected_fields}"
                )
            rows: list[dict[str, str]] = []
            for index, row in enumerate(reader):
                if None in row or any(value is None for value in row.values()):
                    raise ConversionError(path, index, "wrong number of fields")
                rows.append(row)
    except OSError as exc:
        raise ConversionError(path, None, f"cannot read: {exc}") from exc
    except csv.Error as exc:
        raise ConversionError(path, None, f"bad CSV: {exc}") from exc
    return rows


def require_str(value: JSON, path: Path, row: int | str, field: str) -> str:
    if not isinstance(value, str):
        raise ConversionError(path, row, f"field {field!r} is not a string: {value!r}")
    return value


def parse_bool(value: str, path: Path, row: int | str, field: str) -> bool:
    if value == "True":
        return True
    if value == "False":
        return False
    raise ConversionError(path, row, f"field {field!r} is not 'True'/'False': {value!r}")


# --------------------------------------------------------------------------- writers


def dump_line(obj: JSON) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n"


def write_jsonl(path: Path, rows: Iterable[JSON]) -> int:
    """Write one JSON object per line; ids (when present) must be unique and namespaced."""
    count = 0
    ids: set[str] = set()
    with path.open("w", encoding="utf-8", newline="") as handle:
        for row in rows:
            if isinstance(row, dict) and "id" in row:
                item_id = str(row["id"])
                if item_id in ids or not item_id.startswith(f"{row.get('dataset')}/"):
                    raise ConversionError(path, count, f"duplicate or malformed id {item_id!r}")
                ids.add(item_id)
            handle.write(dump_line(row))
            count += 1
    return count


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Written:
    """One output file plus what the manifest needs to say about it."""

    name: str
    file: str
    rows: int
    kind: str
    sources: tuple[str, ...]
    original_paths: tuple[str, ...]
    description: str
    licenses: tuple[str, ...]
    task_types: tuple[str, ...] | None = None
    # Held-out sets: the grader spec per task type (policy [[classes]] keys with a "match"
    # glob) and the recorded models ({"cheap", "reference"}; empty when nothing was recorded).
    graders: tuple[dict[str, JSON], ...] = ()
    models: dict[str, str] | None = None


# --------------------------------------------------------------------------- MT-Bench


def template_regex(template: str) -> re.Pattern[str]:
    """Regex matching ``template`` after str.format; repeated fields must be identical."""
    parts: list[str] = []
    seen: set[str] = set()
    position = 0
    for match in re.finditer(r"\{(\w+)\}", template):
        parts.append(re.escape(template[position : match.start()]))
        name = match.group(1)
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
        seen.add(name)
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts), re.DOTALL)


def load_judge_prompts(source: Path) -> list[dict[str, JSON]]:
    path = source / MT_BENCH_JUDGE_PROMPTS
    prompts = read_jsonl(path)
    for number, prompt in enumerate(prompts, start=1):
        for field in ("name", "prompt_template"):
            require_str(prompt.get(field), path, f"line {number}", field)
    return prompts


RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")


def convert_mt_bench(source: Path) -> tuple[list[dict[str, JSON]], dict[str, int]]:
    questions_path = source / MT_BENCH_QUESTIONS
    judgements_path = source / MT_BENCH_JUDGEMENTS
    references_path = source / MT_BENCH_REFERENCES

    questions: dict[int, tuple[str, list[str]]] = {}
    for number, q in enumerate(read_jsonl(questions_path), start=1):
        turns = q.get("turns")
        qid = q.get("question_id")
        if (
            not isinstance(qid, int)
            or not isinstance(turns, list)
            or len(turns) != 2
            or not all(isinstance(t, str) for t in turns)
            or qid in questions
        ):
            raise ConversionError(questions_path, f"line {number}", "bad question record")
        category = require_str(q.get("category"), questions_path, f"line {number}", "category")
        questions[qid] = (category, [str(t) for t in turns])

    references: dict[int, list[str]] = {}
    for number, ref in enumerate(read_jsonl(references_path), start=1):
        qid = ref.get("question_id")
        choices = ref.get("choices")
        if not isinstance(qid, int) or not isinstance(choices, list) or len(choices) != 1:
            raise ConversionError(references_path, f"line {number}", "bad reference record")
        turns = choices[0].get("turns")
        if not isinstance(turns, list) or len(turns) != 2 or qid in references:
            raise ConversionError(references_path, f"line {number}", "bad reference turns")
        if qid not in questions:
            raise ConversionError(references_path, f"line {number}", f"unknown question {qid}")
        references[qid] = [str(t) for t in turns]

    templates = {str(p["name"]): str(p["prompt_template"]) for p in load_judge_prompts(source)}
    patterns = {name: template_regex(text) for name, text in templates.items()}
    model_keys = {column: key for key, column in ROUTELLM_MODELS.items()}

    # (question_id, model key, turn) -> (answer, judge dict, answer_1 seen in turn-2 prompt)
    records: dict[tuple[int, str, int], tuple[str, dict[str, JSON], str | None]] = {}
    stats: Counter[str] = Counter()
    for number, rec in enumerate(read_jsonl(judgements_path), start=1):
        row = f"line {number}"
        qid = rec.get("question_id")
        turn = rec.get("turn")
        model = rec.get("model")
        judge = rec.get("judge")
        score = rec.get("score")
        if not isinstance(qid, int) or qid not in questions:
            raise ConversionError(judgements_path, row, f"unknown question_id {qid!r}")
        if turn not in (1, 2) or not isinstance(turn, int):
            raise ConversionError(judgements_path, row, f"bad turn {turn!r}")
        if model not in model_keys:
            raise ConversionError(judgements_path, row, f"unexpected model {model!r}")
        if (
            not isinstance(judge, list)
            or len(judge) != 2
            or judge[0] != "gpt-4"
            or judge[1] not in templates
        ):
            raise ConversionError(judgements_path, row, f"unexpected judge {judge!r}")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ConversionError(judgements_path, row, f"bad score {score!r}")
        user_prompt = require_str(rec.get("user_prompt"), judgements_path, row, "user_prompt")
        judgment = require_str(rec.get("judgment"), judgements_path, row, "judgment")
        prompt_name = str(judge[1])
        multi_turn = prompt_name.endswith("-multi-turn")
        if multi_turn != (turn == 2):
            raise ConversionError(judgements_path, row, f"template {prompt_name} for turn {turn}")

        match = patterns[prompt_name].fullmatch(user_prompt)
        if match is None:
            raise ConversionError(
                judgements_path, row, f"user_prompt does not fit template {prompt_name}"
            )
        fields = match.groupdict()
        category, q_turns = questions[qid]
        # The recorded question(s) must be the MT-Bench question(s) ...
        expected: dict[str, str] = (
            {"question_1": q_turns[0], "question_2": q_turns[1]}
            if multi_turn
            else {"question": q_turns[0]}
        )
        # ... and the recorded reference answer(s) must be FastChat's GPT-4 references.
        if "ref_answer_1" in fields:
            if qid not in references:
                raise ConversionError(judgements_path, row, "math template without reference")
            expected["ref_answer_1"] = references[qid][0]
            if "ref_answer_2" in fields:
                expected["ref_answer_2"] = references[qid][1]
        for field, value in expected.items():
            if fields.get(field) != value:
                raise ConversionError(
                    judgements_path, row, f"{field} in user_prompt differs from the source"
                )
        if templates[prompt_name].format(**fields) != user_prompt:
            raise ConversionError(judgements_path, row, "template does not reproduce user_prompt")
        stats["reproduced"] += 1
        ratings = RATING.findall(judgment)
        if not ratings or float(ratings[-1]) != float(score):
            raise ConversionError(judgements_path, row, "score differs from [[rating]] in judgment")

        key = (qid, model_keys[str(model)], turn)
        if key in records:
            raise ConversionError(judgements_path, row, f"duplicate judgement {key}")
        answer = fields["answer_2"] if multi_turn else fields["answer"]
        judge_obj: dict[str, JSON] = {
            "model": "gpt-4",
            "prompt_name": prompt_name,
            "user_prompt": user_prompt,
            "judgment": judgment,
            "score": float(score),
        }
        records[key] = (answer, judge_obj, fields["answer_1"] if multi_turn else None)

    items: list[dict[str, JSON]] = []
    for qid in sorted(questions):
        category, q_turns = questions[qid]
        for turn in (1, 2):
            outputs: dict[str, JSON] = {}
            for model_key in ROUTELLM_MODELS:
                key = (qid, model_key, turn)
                if key not in records:
                    raise ConversionError(judgements_path, None, f"missing judgement {key}")
                answer, judge_obj, _ = records[key]
                outputs[model_key] = {"text": answer, "correct": None, "judge": judge_obj}
            if turn == 1:
                messages = [{"role": "user", "content": q_turns[0]}]
            else:
                for model_key in ROUTELLM_MODELS:
                    # the turn-1 answer replayed in the turn-2 prompt is the model's own
                    seen = records[(qid, model_key, 2)][2]
                    if seen != records[(qid, model_key, 1)][0]:
                        raise ConversionError(
                            judgements_path, None, f"turn-1 answer mismatch {qid} {model_key}"
                        )
                messages = [
                    {"role": "user", "content": q_turns[0]},
                    {"role": "assistant", "content": records[(qid, CHEAP, 1)][0]},
                    {"role": "user", "content": q_turns[1]},
                ]
            items.append(
                {
                    "id": f"mt_bench/{qid}/{turn}",
                    "dataset": "mt_bench",
                    "task_type": f"mt_bench.{category}",
                    "messages": messages,
                    "reference_answer": references[qid][turn - 1] if qid in references else None,
                    "gold": None,
                    "outputs": outputs,
                }
            )
    if len(records) != 4 * len(questions):
        raise ConversionError(judgements_path, None, f"{len(records)} judgements, expected 320")
    stats["judgements"] = len(records)
    return items, dict(stats)


# --------------------------------------------------------------------------- GSM8K

GOLD_MARK = "####"


def gsm8k_gold(answer: str, path: Path, row: int | str) -> str:
    parts = answer.split(GOLD_MARK)
    if len(parts) != 2:
        raise ConversionError(path, row, "gold solution has no single '####'")
    gold = parts[1].strip().replace(",", "")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", gold):
        raise ConversionError(path, row, f"gold answer is not a number: {gold!r}")
    return gold


def convert_gsm8k(source: Path) -> tuple[list[dict[str, JSON]], str]:
    responses_path = source / GSM8K_RESPONSES
    test_path = source / GSM8K_TEST
    columns = ["prompt"]
    columns += list(ROUTELLM_MODELS.values())
    columns += [f"{column}_response" for column in ROUTELLM_MODELS.values()]
    rows = read_csv(responses_path, columns)

    tests = read_jsonl(test_path)
    by_question: dict[str, int] = {}
    for index, test in enumerate(tests):
        question = require_str(test.get("question"), test_path, index, "question")
        require_str(test.get("answer"), test_path, index, "answer")
        if question in by_question:
            raise ConversionError(test_path, index, "duplicate question text")
        by_question[question] = index

    # Join by exact question text; record whether that is also plain row order.
    same_order = len(rows) == len(tests)
    items: list[dict[str, JSON]] = []
    for index, row in enumerate(rows):
        prompt = row["prompt"]
        if prompt not in by_question:
            raise ConversionError(responses_path, index, "prompt not found in test.jsonl")
        test_index = by_question[prompt]
        same_order = same_order and test_index == index
        answer = str(tests[test_index]["answer"])
        outputs: dict[str, JSON] = {}
        for key, column in ROUTELLM_MODELS.items():
            outputs[key] = {
                "text": row[f"{column}_response"],
                "correct": parse_bool(row[column], responses_path, index, column),
                "judge": None,
            }
        items.append(
            {
                "id": f"gsm8k/{index}",
                "dataset": "gsm8k",
                "task_type": "gsm8k",
                "messages": [{"role": "user", "content": prompt}],
                "reference_answer": answer,
                "gold": gsm8k_gold(answer, test_path, test_index),
                "outputs": outputs,
            }
        )
    if len(set(by_question.values())) != len(items) or len(items) != len(tests):
        raise ConversionError(responses_path, None, "responses and test.jsonl do not pair 1:1")
    method = "exact question text (identical to row order)" if same_order else "exact text"
    return items, method


# --------------------------------------------------------------------------- MMLU


def mmlu_files(source: Path) -> list[Path]:
    files = sorted((source / MMLU_DIR).glob("mmlu_*.csv"))
    if not files:
        raise ConversionError(source / MMLU_DIR, None, "no mmlu_*.csv files")
    return files


def convert_mmlu(source: Path) -> tuple[list[dict[str, JSON]], list[str]]:
    columns = ["prompt", *ROUTELLM_MODELS.values()]
    items: list[dict[str, JSON]] = []
    subjects: list[str] = []
    for path in mmlu_files(source):
        subject = path.name.removeprefix("mmlu_").removesuffix(".csv")
        subjects.append(subject)
        for index, row in enumerate(read_csv(path, columns)):
            if not row["prompt"].strip():
                raise ConversionError(path, index, "empty prompt")
            outputs: dict[str, JSON] = {
                key: {
                    "text": None,
                    "correct": parse_bool(row[column], path, index, column),
                    "judge": None,
                }
                for key, column in ROUTELLM_MODELS.items()
            }
            items.append(
                {
                    "id": f"mmlu/{subject}/{index}",
                    "dataset": "mmlu",
                    "task_type": f"mmlu.{subject}",
                    "messages": [{"role": "user", "content": row["prompt"]}],
                    "reference_answer": None,
                    "gold": None,
                    "outputs": outputs,
                }
            )
    return items, subjects


# --------------------------------------------------------------------------- LLMBar

LLMBAR_FIELDS = ("input", "output_1", "output_2", "label")
LLMBAR_ORDERS = {"swap = False": "order_12", "swap = True": "order_21"}
STAT_COUNT = re.compile(r"(\d+) / (\d+) = ")


def llmbar_dir(subset: str) -> str:
    """Natural and Adversarial/* live under Dataset/LLMBar/, Processed/* under Dataset/."""
    return (
        f"{LLMBAR_ROOT}/{subset}"
        if subset.startswith("Processed/")
        else (f"{LLMBAR_ROOT}/LLMBar/{subset}")
    )


def llmbar_evaluators(source: Path, subset: str) -> list[tuple[str, Path]]:
    root = source / llmbar_dir(subset) / "evaluators"
    found = sorted(root.glob("*/*/result.json"))
    if not found:
        raise ConversionError(root, None, "no evaluators/*/*/result.json")
    return [(f"{p.parent.parent.name}/{p.parent.name}", p) for p in found]


def llmbar_instance(value: JSON, path: Path, row: int) -> tuple[str, str, str, int]:
    if not isinstance(value, dict):
        raise ConversionError(path, row, "not an object")
    texts = [require_str(value.get(f), path, row, f) for f in LLMBAR_FIELDS[:3]]
    label = value.get("label")
    if label not in (1, 2) or isinstance(label, bool):
        raise ConversionError(path, row, f"label is not 1 or 2: {label!r}")
    return texts[0], texts[1], texts[2], int(label)


def check_llmbar_statistics(
    stats_path: Path, stats: dict[str, JSON], labels: list[int], verdicts: list[dict[str, JSON]]
) -> None:
    """Recount the authors' correct_*/equal numbers from the converted verdicts."""
    n = len(labels)
    first = [v["order_12"] for v in verdicts]
    second = [v["order_21"] for v in verdicts]
    ours = {
        "correct_False": sum(a == g for a, g in zip(first, labels, strict=True)),
        "correct_True": sum(b == g for b, g in zip(second, labels, strict=True)),
        "correct_both": sum(
            a == g and b == g for a, b, g in zip(first, second, labels, strict=True)
        ),
        # the authors count two unparseable verdicts as agreeing
        "equal": sum(a == b for a, b in zip(first, second, strict=True)),
    }
    for key, count in ours.items():
        match = STAT_COUNT.match(str(stats.get(key)))
        if match is None or (int(match.group(1)), int(match.group(2))) != (count, n):
            raise ConversionError(
                stats_path, key, f"authors report {stats.get(key)!r}, recount gives {count}/{n}"
            )


def convert_llmbar(source: Path) -> tuple[list[dict[str, JSON]], list[dict[str, JSON]], int]:
    items: list[dict[str, JSON]] = []
    statistics: list[dict[str, JSON]] = []
    unparseable = 0
    for subset in LLMBAR_SUBSETS:
        dataset_path = source / llmbar_dir(subset) / "dataset.json"
        dataset = read_json(dataset_path)
        if not isinstance(dataset, list) or not dataset:
            raise ConversionError(dataset_path, None, "not a non-empty list")
        instances = [llmbar_instance(v, dataset_path, i) for i, v in enumerate(dataset)]
        judges: list[dict[str, JSON]] = [{} for _ in instances]
        for evaluator, result_path in llmbar_evaluators(source, subset):
            results = read_json(result_path)
            if not isinstance(results, list) or len(results) != len(instances):
                raise ConversionError(result_path, None, "not a list as long as dataset.json")
            verdicts: list[dict[str, JSON]] = []
            for index, record in enumerate(results):
                if llmbar_instance(record, result_path, index) != instances[index]:
                    raise ConversionError(result_path, index, "instance differs from dataset.json")
                runs = record.get("results")
                if not isinstance(runs, list) or len(runs) != 1 or not isinstance(runs[0], dict):
                    raise ConversionError(result_path, index, "results is not a 1-element list")
                verdict: dict[str, JSON] = {}
                raw: dict[str, JSON] = {}
                for swap, order in LLMBAR_ORDERS.items():
                    run = runs[0].get(swap)
                    if not isinstance(run, dict) or "winner" not in run:
                        raise ConversionError(result_path, index, f"no {swap!r} winner")
                    winner = run["winner"]
                    if winner in ("1", "2"):
                        verdict[order] = int(winner)
                    elif winner is None:
                        verdict[order] = None
                        raw[order] = run
                        unparseable += 1
                    else:
                        raise ConversionError(result_path, index, f"winner {winner!r}")
                if raw:
                    verdict["raw"] = raw
                verdicts.append(verdict)
                judges[index][evaluator] = verdict

            stats_path = result_path.with_name("statistics.json")
            stats = read_json(stats_path)
            if not isinstance(stats, dict):
                raise ConversionError(stats_path, None, "not an object")
            check_llmbar_statistics(stats_path, stats, [i[3] for i in instances], verdicts)
            statistics.append({**stats, "subset": subset, "evaluator": evaluator})

        for index, (text, output_1, output_2, label) in enumerate(instances):
            items.append(
                {
                    "id": f"llmbar/{subset}/{index}",
                    "dataset": "llmbar",
                    "subset": subset,
                    "input": text,
                    "output_1": output_1,
                    "output_2": output_2,
                    "human": [label],
                    "judges": judges[index],
                }
            )
    return items, statistics, unparseable


# --------------------------------------------------------------------------- PandaLM

PANDALM_ANNOTATORS = ("annotator1", "annotator2", "annotator3")
PANDALM_GPT_VERDICTS: dict[str, int] = {"1": 1, "2": 2, "Tie": 0}


def pandalm_text(value: JSON, path: Path, row: int, field: str, fixed: list[str]) -> str:
    # Upstream quirk: a few responses that read "True" are stored as JSON true.
    if value is True:
        fixed.append(f"row {row} {field}")
        return "True"
    return require_str(value, path, row, field)


def convert_pandalm(source: Path) -> tuple[list[dict[str, JSON]], list[str]]:
    test_path = source / PANDALM_TESTSET
    gpt_path = source / PANDALM_GPT
    lm_path = source / PANDALM_7B
    tests = read_json(test_path)
    gpt = read_json(gpt_path)
    lm = read_json(lm_path)
    for path, value in ((test_path, tests), (gpt_path, gpt), (lm_path, lm)):
        if not isinstance(value, list) or not value:
            raise ConversionError(path, None, "not a non-empty list")
    gpt_by_idx = {r.get("idx"): r for r in gpt if isinstance(r, dict)}
    lm_by_idx = {r.get("idx"): r for r in lm if isinstance(r, dict)}
    if len(gpt_by_idx) != len(gpt) or len(lm_by_idx) != len(lm) or len(gpt) != len(tests):
        raise ConversionError(gpt_path, None, "verdict files do not pair 1:1 with testset by idx")

    fixed: list[str] = []
    items: list[dict[str, JSON]] = []
    seen: set[int] = set()
    for row, record in enumerate(tests):
        if not isinstance(record, dict):
            raise ConversionError(test_path, row, "not an object")
        idx = record.get("idx")
        if not isinstance(idx, int) or isinstance(idx, bool) or idx in seen:
            raise ConversionError(test_path, row, f"bad or duplicate idx {idx!r}")
        seen.add(idx)
        instruction = require_str(record.get("instruction"), test_path, row, "instruction")
        context = require_str(record.get("input"), test_path, row, "input")
        response1 = pandalm_text(record.get("response1"), test_path, row, "response1", fixed)
        response2 = pandalm_text(record.get("response2"), test_path, row, "response2", fixed)
        human: list[JSON] = []
        for field in PANDALM_ANNOTATORS:
            value = record.get(field)
            if value not in (0, 1, 2) or isinstance(value, bool):
                raise ConversionError(test_path, row, f"{field} is not 0/1/2: {value!r}")
            human.append(value)

        if idx not in gpt_by_idx:
            raise ConversionError(gpt_path, f"idx {idx}", "missing")
        gpt_record = gpt_by_idx[idx]
        gpt_result = gpt_record.get("gpt_result")
        gpt_verdict: dict[str, JSON] = {"order_12": None, "order_21": None}
        if gpt_result in PANDALM_GPT_VERDICTS:
            gpt_verdict["order_12"] = PANDALM_GPT_VERDICTS[str(gpt_result)]
        elif gpt_result == "garbage":
            gpt_verdict["raw"] = {"order_12": gpt_record}
        else:
            raise ConversionError(gpt_path, f"idx {idx}", f"gpt_result {gpt_result!r}")

        if idx not in lm_by_idx:
            raise ConversionError(lm_path, f"idx {idx}", "missing")
        lm_result = lm_by_idx[idx].get("pandalm_result")
        if lm_result not in (0, 1, 2) or isinstance(lm_result, bool):
            raise ConversionError(lm_path, f"idx {idx}", f"pandalm_result {lm_result!r}")
        lm_verdict: dict[str, JSON] = {"order_12": lm_result, "order_21": None}

        items.append(
            {
                "id": f"pandalm/{idx}",
                "dataset": "pandalm",
                "subset": "testset-v1",
                "input": f"{instruction}\n\n{context}" if context else instruction,
                "output_1": response1,
                "output_2": response2,
                "human": human,
                "judges": {"gpt-3.5-turbo": gpt_verdict, "pandalm-7b": lm_verdict},
                "meta": {
                    "idx": idx,
                    "motivation_app": record.get("motivation_app"),
                    "cmp_key": record.get("cmp_key"),
                    "instruction": instruction,
                    "input": context,
                },
            }
        )
    return items, fixed


# --------------------------------------------------------------------------- intents


def convert_clinc150(source: Path) -> list[dict[str, JSON]]:
    path = source / CLINC_DATA
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConversionError(path, None, "not an object")
    items: list[dict[str, JSON]] = []
    for split in ("test", "oos_test"):
        rows = data.get(split)
        if not isinstance(rows, list) or not rows:
            raise ConversionError(path, split, "split missing or empty")
        for index, pair in enumerate(rows):
            where = f"{split}[{index}]"
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(x, str) and x for x in pair)
            ):
                raise ConversionError(path, where, f"not a [text, intent] pair: {pair!r}")
            if split == "oos_test" and pair[1] != "oos":
                raise ConversionError(path, where, f"oos_test label {pair[1]!r}")
            items.append(
                {
                    "id": f"clinc150/{split}/{index}",
                    "dataset": "clinc150",
                    "text": pair[0],
                    "label": pair[1],
                }
            )
    return items


def convert_banking77(source: Path) -> list[dict[str, JSON]]:
    path = source / BANKING_TEST
    categories_path = path.with_name("categories.json")
    categories = read_json(categories_path)
    if not isinstance(categories, list):
        raise ConversionError(categories_path, None, "not a list")
    items: list[dict[str, JSON]] = []
    for index, row in enumerate(read_csv(path, ["text", "category"])):
        if not row["text"].strip() or row["category"] not in categories:
            raise ConversionError(path, index, f"empty text or unknown category: {row!r}")
        items.append(
            {
                "id": f"banking77/{index}",
                "dataset": "banking77",
                "text": row["text"],
                "label": row["category"],
            }
        )
    return items


BANKING_INSTRUCTION = (
    "You classify one message to a bank's customer support into exactly one intent. Answer "
    "with the intent's name only, exactly as written in this list:\n"
)


def banking77_held_out(intents: list[dict[str, JSON]]) -> tuple[list[dict[str, JSON]], list[str]]:
    """The BANKING77 test split as a held-out set for classification: the intent list in the
    system message (sorted), the utterance as the user message, the
    intent as ``gold``; no recorded outputs (upstream recorded none)."""
    labels = list(dict.fromkeys(str(i["label"]) for i in intents))
    system = BANKING_INSTRUCTION + "\n".join(sorted(labels))
    items: list[dict[str, JSON]] = []
    for row in intents:
        index = str(row["id"]).split("/", 1)[1]
        items.append(
            {
                "id": f"banking77_classify/{index}",
                "dataset": "banking77_classify",
                "task_type": "banking77",
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": row["text"]},
                ],
                "reference_answer": None,
                "gold": row["label"],
                "outputs": {},
            }
        )
    return items, sorted(labels)


# --------------------------------------------------------------------------- main

# --------------------------------------------------------------------------- lost in the middle

LITM_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
LITM_WORD = re.compile(r"\w+")


def litm_words(text: str) -> set[str]:
    return {w.lower() for w in LITM_WORD.findall(text)} - LITM_STOPWORDS


def convert_litm_nq(source: Path) -> list[dict[str, JSON]]:
    """NQ-Open questions with their gold passage and, per question, the 19 gold passages of
    other questions that share the most of its words (IDF-weighted) and hold none of its
    answers: the distractors of a 20-document context (the first 9: of a 10-document one),
    standing in for the paper's retrieved distractors."""
    path = source / LITM_NQ
    rows = read_jsonl_gz(path)
    passages: list[tuple[str, str]] = []
    items: list[dict[str, JSON]] = []
    for number, row in enumerate(rows, start=1):
        where = f"line {number}"
        question = require_str(row.get("question"), path, where, "question")
        answers = row.get("answers")
        if not isinstance(answers, list) or not answers:
            raise ConversionError(path, where, "answers is not a non-empty list")
        ctxs = row.get("ctxs")
        if not isinstance(ctxs, list) or len(ctxs) != 1 or not ctxs[0].get("isgold"):
            raise ConversionError(path, where, "ctxs is not one gold passage")
        title = require_str(ctxs[0].get("title"), path, where, "ctxs[0].title")
        text = require_str(ctxs[0].get("text"), path, where, "ctxs[0].text")
        passages.append((title, text))
        items.append(
            {
                "id": f"lost_in_the_middle_nq/{number - 1}",
                "dataset": "lost_in_the_middle_nq",
                "question": question,
                "answers": [require_str(a, path, where, "answers[]") for a in answers],
                "gold": {"title": title, "text": text},
            }
        )
    bags = [litm_words(f"{t} {x}") for t, x in passages]
    postings: dict[str, list[int]] = {}
    for index, bag in enumerate(bags):
        for word in bag:
            postings.setdefault(word, []).append(index)
    n = len(bags)
    for index, item in enumerate(items):
        scores: dict[int, float] = {}
        for word in litm_words(str(item["question"])):
            docs = postings.get(word, [])
            if not docs:
                continue
            idf = math.log(n / len(docs))
            for doc in docs:
                scores[doc] = scores.get(doc, 0.0) + idf
        holds = [
            re.compile(r"(?<!\w)" + re.escape(str(a)) + r"(?!\w)", re.I) for a in item["answers"]
        ]
        gold_text = passages[index][1]
        ranked = sorted(scores, key=lambda d: (-scores[d], d))
        ranked += [d for d in range(n) if d not in scores]
        chosen: list[int] = []
        for doc in ranked:
            title, text = passages[doc]
            blob = f"{title} {text}"
            if doc == index or text == gold_text or any(h.search(blob) for h in holds):
                continue
            if any(passages[c][1] == text for c in chosen):
                continue
            chosen.append(doc)
            if len(chosen) == LITM_DISTRACTORS:
                break
        if len(chosen) < LITM_DISTRACTORS:
            raise ConversionError(path, index, "fewer than 19 distractor passages")
        item["distractors"] = [f"lost_in_the_middle_nq/{d}" for d in chosen]
    return items


def convert_litm_kv(source: Path) -> list[dict[str, JSON]]:
    """The first LITM_KV_ITEMS items of the 75-key KV-retrieval set, as recorded."""
    path = source / LITM_KV
    items: list[dict[str, JSON]] = []
    for number, row in enumerate(read_jsonl_gz(path)[:LITM_KV_ITEMS], start=1):
        where = f"line {number}"
        records = row.get("ordered_kv_records")
        if not isinstance(records, list) or len(records) != 75:
            raise ConversionError(path, where, "ordered_kv_records is not 75 pairs")
        pairs = [
            [require_str(k, path, where, "key"), require_str(v, path, where, "value")]
            for k, v in records
        ]
        key = require_str(row.get("key"), path, where, "key")
        value = require_str(row.get("value"), path, where, "value")
        if [key, value] not in pairs:
            raise ConversionError(path, where, "the key/value pair is not among the records")
        items.append(
            {
                "id": f"lost_in_the_middle_kv/{number - 1}",
                "dataset": "lost_in_the_middle_kv",
                "key": key,
                "value": value,
                "ordered_kv_records": pairs,
            }
        )
    return items


# --------------------------------------------------------------------------- manifest


ROUTELLM_LICENSE = "Apache-2.0 (RouteLLM repository)"
OUTPUT_TERMS = (
    "model outputs: Mixtral-8x7B-Instruct-v0.1 and GPT-4 (gpt-4-1106-preview, gpt-4 judge) "
    "outputs; provider terms apply"
)


def convert_all(source: Path, out: Path) -> list[Written]:
    written: list[Written] = []

    mt_items, mt_stats = convert_mt_bench(source)
    log(
        f"mt_bench: {mt_stats['reproduced']}/{mt_stats['judgements']} judge user_prompts "
        "reproduced byte for byte from the named template"
    )
    written.append(
        Written(
            name="mt_bench",
            file="mt_bench.jsonl",
            rows=write_jsonl(out / "mt_bench.jsonl", mt_items),
            kind="held_out",
            sources=("routellm", "mt_bench"),
            original_paths=(
                MT_BENCH_JUDGEMENTS,
                MT_BENCH_QUESTIONS,
                MT_BENCH_REFERENCES,
                MT_BENCH_JUDGE_PROMPTS,
            ),
            description=(
                "MT-Bench 80 questions x 2 turns with Mixtral/GPT-4-1106 answers and "
                "GPT-4 single-answer judge scores (1-10) recorded by RouteLLM"
            ),
            licenses=(
                ROUTELLM_LICENSE,
                "Apache-2.0 (FastChat: MT-Bench questions, GPT-4 reference answers, judge prompts)",
                OUTPUT_TERMS,
            ),
            task_types=tuple(sorted({str(i["task_type"]) for i in mt_items})),
            graders=({"match": "mt_bench.*", "grader": "judge_single", "pass_mark": 7},),
        )
    )

    gsm_items, gsm_join = convert_gsm8k(source)
    log(f"gsm8k: gold joined by {gsm_join}")
    written.append(
        Written(
            name="gsm8k",
            file="gsm8k.jsonl",
            rows=write_jsonl(out / "gsm8k.jsonl", gsm_items),
            kind="held_out",
            sources=("routellm",),
            original_paths=(GSM8K_RESPONSES, GSM8K_TEST),
            description=(
                "GSM8K test (1,319) with Mixtral/GPT-4-1106 full responses, recorded "
                "correctness and gold answers"
            ),
            licenses=(
                ROUTELLM_LICENSE,
                "MIT (GSM8K problems and solutions, openai/grade-school-math)",
                OUTPUT_TERMS,
            ),
            task_types=("gsm8k",),
            graders=({"match": "gsm8k", "grader": "numeric"},),
        )
    )

    mmlu_items, subjects = convert_mmlu(source)
    written.append(
        Written(
            name="mmlu",
            file="mmlu.jsonl",
            rows=write_jsonl(out / "mmlu.jsonl", mmlu_items),
            kind="held_out",
            sources=("routellm",),
            original_paths=tuple(f"{MMLU_DIR}/mmlu_{s}.csv" for s in subjects),
            description=(
                "MMLU test (14,042 rows, 57 subjects) with recorded Mixtral/GPT-4-1106 "
                "correctness; responses not recorded"
            ),
            licenses=(ROUTELLM_LICENSE, "MIT (MMLU questions, hendrycks/test)", OUTPUT_TERMS),
            task_types=tuple(sorted(f"mmlu.{s}" for s in subjects)),
            graders=({"match": "mmlu.*", "grader": "recorded_correctness"},),
        )
    )

    prompts = load_judge_prompts(source)
    (out / JUDGE_PROMPTS_FILE).parent.mkdir(parents=True, exist_ok=True)
    written.append(
        Written(
            name="mt_bench_judge_prompts",
            file=JUDGE_PROMPTS_FILE,
            rows=write_jsonl(out / JUDGE_PROMPTS_FILE, prompts),
            kind="judge_prompts",
            sources=("mt_bench",),
            original_paths=(MT_BENCH_JUDGE_PROMPTS,),
            description=(
                "The 8 FastChat MT-Bench judge prompt templates (pairwise and single), "
                "shipped with the graders as package data"
            ),
            licenses=("Apache-2.0 (FastChat)",),
        )
    )

    llmbar_items, llmbar_stats, llmbar_null = convert_llmbar(source)
    log(f"llmbar: {llmbar_null} unparseable verdicts (winner null); authors' counts recomputed")
    llmbar_results = [
        path.relative_to(source).as_posix()
        for subset in LLMBAR_SUBSETS
        for _, path in llmbar_evaluators(source, subset)
    ]
    llmbar_paths = (
        *(f"{llmbar_dir(s)}/dataset.json" for s in LLMBAR_SUBSETS),
        *llmbar_results,
    )
    llmbar_licenses = (
        "MIT (LLMBar repository)",
        "Processed/MT-Bench: CC BY 4.0 (lmsys/mt_bench_human_judgments)",
        "judge verdicts: OpenAI ChatGPT/GPT-4 outputs (provider terms apply) and LLaMA-2 "
        "outputs (Llama 2 Community License)",
    )
    written.append(
        Written(
            name="llmbar",
            file="llmbar.jsonl",
            rows=write_jsonl(out / "llmbar.jsonl", llmbar_items),
            kind="judge_calibration",
            sources=("llmbar",),
            original_paths=llmbar_paths,
            description=(
                "LLMBar pairwise instances (8 subsets) with the gold label and the authors' "
                "recorded judge verdicts in both presentation orders"
            ),
            licenses=llmbar_licenses,
        )
    )
    written.append(
        Written(
            name="llmbar_statistics",
            file="llmbar_statistics.jsonl",
            rows=write_jsonl(out / "llmbar_statistics.jsonl", llmbar_stats),
            kind="judge_calibration",
            sources=("llmbar",),
            original_paths=tuple(
                p.removesuffix("result.json") + "statistics.json" for p in llmbar_results
            ),
            description="The LLMBar authors' statistics.json per subset x evaluator, verbatim",
            licenses=("MIT (LLMBar repository)",),
        )
    )

    pandalm_items, pandalm_fixed = convert_pandalm(source)
    log(f"pandalm: JSON true turned into the text 'True' at {', '.join(pandalm_fixed)}")
    written.append(
        Written(
            name="pandalm",
            file="pandalm.jsonl",
            rows=write_jsonl(out / "pandalm.jsonl", pandalm_items),
            kind="judge_calibration",
            sources=("pandalm",),
            original_paths=(
                PANDALM_TESTSET,
                PANDALM_GPT,
                PANDALM_7B,
            ),
            description=(
                "PandaLM test set v1: 999 response pairs, 3 human labels, recorded "
                "gpt-3.5-turbo and PandaLM-7B verdicts"
            ),
            licenses=(
                "Apache-2.0 (PandaLM repository)",
                "responses/verdicts: outputs of LLaMA, BLOOM, OPT, Pythia, Cerebras-GPT, "
                "gpt-3.5-turbo and PandaLM-7B (model and provider terms apply)",
            ),
        )
    )

    written.append(
        Written(
            name="clinc150",
            file="clinc150.jsonl",
            rows=write_jsonl(out / "clinc150.jsonl", convert_clinc150(source)),
            kind="intents",
            sources=("clinc150",),
            original_paths=(CLINC_DATA,),
            description="CLINC150 test split (4,500, 150 intents) plus oos_test (1,000, 'oos')",
            licenses=("CC BY 3.0",),
        )
    )
    intents = convert_banking77(source)
    written.append(
        Written(
            name="banking77",
            file="banking77.jsonl",
            rows=write_jsonl(out / "banking77.jsonl", intents),
            kind="intents",
            sources=("banking77",),
            original_paths=(BANKING_TEST,),
            description="BANKING77 test split (3,080 utterances, 77 intents)",
            licenses=("CC BY 4.0",),
        )
    )
    classify, labels = banking77_held_out(intents)
    written.append(
        Written(
            name="banking77_classify",
            file="banking77_classify.jsonl",
            rows=write_jsonl(out / "banking77_classify.jsonl", classify),
            kind="held_out",
            sources=("banking77",),
            original_paths=(BANKING_TEST, str(Path(BANKING_TEST).with_name("categories.json"))),
            description=(
                "BANKING77 test split (3,080) as a classification held-out set: the 77 intents "
                "in the system message, the intent as gold; no recorded outputs (live only)"
            ),
            licenses=("CC BY 4.0",),
            task_types=("banking77",),
            graders=({"match": "banking77", "grader": "label", "labels": list(labels)},),
            models={},
        )
    )
    litm_licenses = (
        "MIT (lost-in-the-middle repository, (c) 2023 Nelson Liu)",
        "questions and answers: Natural Questions (Kwiatkowski et al. 2019), CC BY-SA 3.0",
        "passages: Wikipedia, CC BY-SA",
    )
    written.append(
        Written(
            name="lost_in_the_middle_nq",
            file="lost_in_the_middle_nq.jsonl",
            rows=write_jsonl(out / "lost_in_the_middle_nq.jsonl", convert_litm_nq(source)),
            kind="compression",
            sources=("lost_in_the_middle",),
            original_paths=(LITM_NQ,),
            description=(
                "NQ-Open (2,655) with answers, the gold Wikipedia passage and 19 distractor "
                "passages each (other questions' gold passages sharing its words, none holding "
                "an answer): multi-document contexts for compression benchmarks"
            ),
            licenses=litm_licenses,
        )
    )
    written.append(
        Written(
            name="lost_in_the_middle_kv",
            file="lost_in_the_middle_kv.jsonl",
            rows=write_jsonl(out / "lost_in_the_middle_kv.jsonl", convert_litm_kv(source)),
            kind="compression",
            sources=("lost_in_the_middle",),
            original_paths=(LITM_KV,),
            description=(
                "KV retrieval, 75 UUID key-value pairs per item (the first 200 of 500) and the "
                "key to look up with its value: exact-field extraction"
            ),
            licenses=("MIT (lost-in-the-middle repository, (c) 2023 Nelson Liu)",),
        )
    )
    return written


def copy_licenses(source: Path, out: Path) -> None:
    target = out / "licenses"
    target.mkdir(parents=True, exist_ok=True)
    for name, relative in LICENSES.items():
        path = source / relative
        if not path.is_file():
            raise ConversionError(path, None, "license file missing")
        shutil.copyfile(path, target / f"{name}.LICENSE")


def manifest_entry(out: Path, written: Written) -> dict[str, JSON]:
    path = out / written.file
    entry: dict[str, JSON] = {
        "name": written.name,
        "file": written.file,
        "rows": written.rows,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "kind": written.kind,
        "source": [
            {"name": name, **SOURCES[name], "license_file": f"licenses/{name}.LICENSE"}
            for name in written.sources
        ],
        "license": list(written.licenses),
        "original_paths": list(written.original_paths),
        "description": written.description,
    }
    if written.kind == "held_out":
        entry["task_types"] = sorted(written.task_types or ())
        recorded = {"cheap": CHEAP, "reference": REFERENCE}
        entry["models"] = dict(recorded if written.models is None else written.models)
        entry["graders"] = [dict(g) for g in written.graders]
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="shared/data directory")
    parser.add_argument("--out", type=Path, required=True, help="output datasets/ directory")
    args = parser.parse_args(argv)
    source: Path = args.source
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    try:
        written = convert_all(source, out)
        copy_licenses(source, out)
    except ConversionError as exc:
        log(f"error: {exc}")
        return 1
    manifest = [manifest_entry(out, w) for w in written]
    (out / "manifest.json").write_text(
        json.dumps(manifest, sort_keys=True, ensure_ascii=False, indent=2) + "\n",
        encoding="utf-8",
        newline="",
    )
    for w in written:
        log(f"{w.file}: {w.rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
