"""Benchmark: the prompt compressors on real retrieval contexts, against random sentences.

Run: ``.venv/bin/python -m bench.compression [--items 300] [--kv-items 200] [--json PATH]``
(about 2-4 minutes on 2 busy cores with the defaults; ``--items 50 --kv-items 20`` for a smoke
run).

Data (``datasets/``, converted by ``scripts/convert_datasets.py`` from
``shared/data/lost_in_the_middle``, Liu et al. 2023, "Lost in the Middle"; MIT, questions from
Natural Questions CC BY-SA 3.0, passages from Wikipedia CC BY-SA):

- **NQ-Open**: ``--items`` questions drawn with a fixed seed; each question's gold passage among
  its 9 or 19 distractors (other questions' passages sharing its words, none holding an answer),
  at the first, the middle (position 4 of 10, 9 of 20: the paper's) or the last position. The
  prompt is the paper's QA prompt: an instruction, ``Document [i](Title: …) text`` lines, then
  ``Question: …`` / ``Answer:``.
- **KV retrieval**: 75 UUID key-value pairs as a JSON object (one pair a line) and the key to
  look up, in the paper's KV prompt.

Every context goes through :func:`router.compression.compress_messages`, as the gateway stage
sends it: the instruction and the question are never compressed. For each compressor and target
ratio (share of the context's estimated tokens kept: 0.3, 0.5, 0.7):

- ``achieved_ratio``: context tokens sent / context tokens before, over all items;
- ``retention``: share of items whose compressed context still holds an answer string (NQ: any
  of the item's answers as a whole word, any case; only items whose full context holds one
  count, which is all of them here; KV: the value);
- ``ms_per_1k_tokens``: compression time per 1,000 context tokens (wall clock, this process);
- for KV with the extraction guard (``guard``): how many items went compressed with the value
  kept and how many were sent uncompressed, and why.

``random`` (units in a seeded random order up to the budget) is the baseline, measured in the
same run on the same items. ``--json PATH`` writes::

    {"bench": "compression", "environment": {...},
     "nq": [{"documents": 20, "position": "middle" | "first" | "last" | "all", "compressor": str,
             "ratio": 0.5, "items": int, "achieved_ratio": float, "retention": float,
             "retention_ci": [low, high], "ms_per_1k_tokens": float}, ...],
     "kv": [{"compressor": str, "guard": bool, "ratio": float, "items": int,
             "achieved_ratio": float, "retention": float, "compressed_with_value": int,
             "uncompressed": int, "uncompressed_reasons": {reason: count},
             "ms_per_1k_tokens": float}, ...],
     "goals": {...}, "seconds": float}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.stats import wilson
from router.compression import Options, compress_messages

DATASETS = Path(__file__).resolve().parent.parent / "datasets"
RATIOS = (0.3, 0.5, 0.7)
PIPELINES: dict[str, tuple[str, ...]] = {
    "random": ("random",),
    "tfidf": ("tfidf",),
    "query": ("query",),
    "structural": ("structural",),
    "redundancy": ("redundancy",),
    "redundancy+query": ("redundancy", "query"),
}
POSITIONS = ("first", "middle", "last")
QA_INSTRUCTION = (
    "Write a high-quality answer for the given question using only the provided search results "
    "(some of which might be irrelevant)."
)
KV_INSTRUCTION = "Extract the value corresponding to the specified key in the JSON object below."


@dataclass(frozen=True)
class Item:
    """One benchmark prompt: the messages, the answer strings, where it came from."""

    id: str
    messages: list[dict[str, Any]]
    answers: tuple[str, ...]
    documents: int
    position: str


def _read(name: str) -> list[dict[str, Any]]:
    path = DATASETS / name
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def nq_items(count: int, seed: int) -> list[Item]:
    """``count`` questions (seeded draw) x {10, 20} documents x {first, middle, last}."""
    rows = _read("lost_in_the_middle_nq.jsonl")
    by_id = {r["id"]: r for r in rows}
    chosen = random.Random(seed).sample(rows, min(count, len(rows)))
    items: list[Item] = []
    for row in chosen:
        for documents in (10, 20):
            distractors = [by_id[d]["gold"] for d in row["distractors"][: documents - 1]]
            for position in POSITIONS:
                at = {"first": 0, "middle": 4 if documents == 10 else 9, "last": documents - 1}
                docs = list(distractors)
                docs.insert(at[position], row["gold"])
                results = "\n".join(
                    f"Document [{i + 1}](Title: {d['title']}) {d['text']}"
                    for i, d in enumerate(docs)
                )
                prompt = f"{QA_INSTRUCTION}\n\n{results}\n\nQuestion: {row['question']}\nAnswer:"
                items.append(
                    Item(
                        f"{row['id']}/{documents}/{position}",
                        [{"role": "user", "content": prompt}],
                        tuple(row["answers"]),
                        documents,
                        position,
                    )
                )
    return items


def kv_items(count: int) -> list[Item]:
    """The first ``count`` KV-retrieval items in the paper's prompt (one pair a line)."""
    items: list[Item] = []
    for row in _read("lost_in_the_middle_kv.jsonl")[:count]:
        pairs = ",\n ".join(
            f"{json.dumps(k)}: {json.dumps(v)}" for k, v in row["ordered_kv_records"]
        )
        prompt = (
            f"{KV_INSTRUCTION}\n\nJSON data:\n{{{pairs}}}\n\n"
            f"Key: {json.dumps(row['key'])}\nCorresponding value:"
        )
        items.append(
            Item(row["id"], [{"role": "user", "content": prompt}], (row["value"],), 75, "-")
        )
    return items


def _holds(text: str, answers: tuple[str, ...]) -> bool:
    return any(
        re.search(r"(?<!\w)" + re.escape(a) + r"(?!\w)", text, re.I) is not None for a in answers
    )


def _context(content: str) -> str:
    """The prompt without its instruction and question (what retention is measured on)."""
    parts = content.split("\n\n")
    return "\n\n".join(parts[1:-1])


@dataclass
class Tally:
    items: int = 0
    held: int = 0
    before: int = 0
    after: int = 0
    seconds: float = 0.0
    compressed_with_value: int = 0
    uncompressed: int = 0

    def row(self, confidence: float = 0.95) -> dict[str, Any]:
        est = wilson(self.items - self.held, self.items, confidence) if self.items else None
        retention = self.held / self.items if self.items else None
        ci = None
        if est is not None and est.ci_low is not None and est.ci_high is not None:
            ci = [round(1 - est.ci_high, 4), round(1 - est.ci_low, 4)]
        return {
            "items": self.items,
            "achieved_ratio": round(self.after / self.before, 4) if self.before else None,
            "retention": None if retention is None else round(retention, 4),
            "retention_ci": ci,
            "ms_per_1k_tokens": round(self.seconds * 1e6 / self.before, 4) if self.before else None,
        }


def run_one(
    item: Item, pipeline: tuple[str, ...], ratio: float, guard: bool, seed: int
) -> tuple[bool, int, int, float, str, str]:
    """(answer kept, tokens before, after, seconds, status, reason) for one item."""
    started = time.perf_counter()
    result = compress_messages(
        item.messages, pipeline, ratio, guard=guard, options=Options(seed=seed)
    )
    took = time.perf_counter() - started
    content = result.messages[-1]["content"]
    before = result.original_tokens
    after = result.tokens
    if result.status != "compressed":
        from router.tokens import estimate_text_tokens

        before = after = estimate_text_tokens(_context(item.messages[-1]["content"]))
    return (
        _holds(_context(content), item.answers),
        before,
        after,
        took,
        result.status,
        result.reason,
    )


def bench_nq(items: list[Item], progress: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    answerable = [i for i in items if _holds(_context(i.messages[0]["content"]), i.answers)]
    if len(answerable) != len(items):
        print(f"nq: {len(items) - len(answerable)} items whose context lacks an answer left out")
    for name, pipeline in PIPELINES.items():
        for ratio in RATIOS:
            tallies: dict[tuple[int, str], Tally] = {}
            for n, item in enumerate(answerable):
                held, before, after, took, _, _ = run_one(item, pipeline, ratio, False, n)
                for key in ((item.documents, item.position), (item.documents, "all")):
                    t = tallies.setdefault(key, Tally())
                    t.items += 1
                    t.held += held
                    t.before += before
                    t.after += after
                    t.seconds += took
            for (documents, position), t in sorted(tallies.items()):
                rows.append(
                    {
                        "documents": documents,
                        "position": position,
                        "compressor": name,
                        "ratio": ratio,
                        **t.row(),
                    }
                )
            if progress:
                all20 = tallies[(20, "all")].row()
                print(
                    f"  nq {name:>17} @ {ratio}: 20 docs achieved {all20['achieved_ratio']}, "
                    f"retention {all20['retention']}",
                    file=sys.stderr,
                )
    return rows


def bench_kv(items: list[Item]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, pipeline in PIPELINES.items():
        for guard in (False, True):
            for ratio in RATIOS:
                t = Tally()
                reasons: Counter[str] = Counter()
                for n, item in enumerate(items):
                    held, before, after, took, status, reason = run_one(
                        item, pipeline, ratio, guard, n
                    )
                    t.items += 1
                    t.held += held
                    t.before += before
                    t.after += after
                    t.seconds += took
                    if status == "compressed":
                        t.compressed_with_value += held
                    else:
                        t.uncompressed += 1
                        reasons[re.sub(r"'[^']*'", "'…'", reason)] += 1
                rows.append(
                    {
                        "compressor": name,
                        "guard": guard,
                        "ratio": ratio,
                        **t.row(),
                        "compressed_with_value": t.compressed_with_value,
                        "uncompressed": t.uncompressed,
                        "uncompressed_reasons": dict(sorted(reasons.items())),
                    }
                )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="prompt compressors on lost-in-the-middle data")
    parser.add_argument("--items", type=int, default=300, help="NQ questions (x 6 contexts)")
    parser.add_argument("--kv-items", type=int, default=200, help="KV items (at most 200)")
    parser.add_argument("--seed", type=int, default=20231106)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    nq = nq_items(args.items, args.seed)
    kv = kv_items(args.kv_items)
    print(f"nq: {len(nq)} contexts ({args.items} questions x 10/20 documents x 3 positions)")
    nq_rows = bench_nq(nq, progress=True)
    kv_rows = bench_kv(kv)

    print("\nNQ-Open, 20 documents (all positions): achieved ratio / answer retention / ms per 1k")
    print(f"{'compressor':>17} " + " ".join(f"{'@' + str(r):>22}" for r in RATIOS))
    for docs in (20, 10):
        print(f"-- {docs} documents")
        for name in PIPELINES:
            cells = []
            for ratio in RATIOS:
                row = next(
                    r
                    for r in nq_rows
                    if r["documents"] == docs
                    and r["position"] == "all"
                    and r["compressor"] == name
                    and r["ratio"] == ratio
                )
                cells.append(
                    f"{_fmt(row['achieved_ratio'])}/{_fmt(row['retention'])}/"
                    f"{_fmt(row['ms_per_1k_tokens'])}"
                )
            print(f"{name:>17} " + " ".join(f"{c:>22}" for c in cells))
    print("\nNQ-Open, 20 documents at 0.5, by gold position: retention")
    for name in PIPELINES:
        cells = []
        for position in POSITIONS:
            row = next(
                r
                for r in nq_rows
                if r["documents"] == 20
                and r["position"] == position
                and r["compressor"] == name
                and r["ratio"] == 0.5
            )
            cells.append(f"{position} {_fmt(row['retention'])}")
        print(f"{name:>17} " + "  ".join(cells))
    print(
        "\nKV retrieval (75 keys): achieved / retention; with the guard: compressed+kept, sent "
        "uncompressed"
    )
    for row in kv_rows:
        print(
            f"{row['compressor']:>17} guard={'on ' if row['guard'] else 'off'} @{row['ratio']}: "
            f"{_fmt(row['achieved_ratio'])} / {_fmt(row['retention'])}; "
            f"compressed with value {row['compressed_with_value']}, uncompressed "
            f"{row['uncompressed']} {row['uncompressed_reasons'] or ''}"
        )

    def pick(name: str, ratio: float = 0.5) -> dict[str, Any]:
        return next(
            r
            for r in nq_rows
            if r["documents"] == 20
            and r["position"] == "all"
            and r["compressor"] == name
            and r["ratio"] == ratio
        )

    guarded = [r for r in kv_rows if r["guard"]]
    goals = {
        "nq20_query_retention_at_0.5": pick("query")["retention"],
        "nq20_query_goal_0.95_met": (pick("query")["retention"] or 0) >= 0.95,
        "nq20_tfidf_retention_at_0.5": pick("tfidf")["retention"],
        "nq20_random_retention_at_0.5": pick("random")["retention"],
        "kv_guard_value_kept_or_uncompressed_everywhere": all(
            r["compressed_with_value"] + r["uncompressed"] == r["items"] for r in guarded
        ),
    }
    print("\ngoals:", json.dumps(goals))
    seconds = round(time.perf_counter() - started, 1)
    print(f"{seconds} s")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "bench": "compression",
                    "environment": {
                        "python": platform.python_version(),
                        "cpu_count": os.cpu_count(),
                        "options": {
                            "items": args.items,
                            "kv_items": args.kv_items,
                            "seed": args.seed,
                            "json": str(args.json),
                        },
                    },
                    "nq": nq_rows,
                    "kv": kv_rows,
                    "goals": goals,
                    "seconds": seconds,
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
