"""The run's results log: an append-only JSONL file, one row per answer or grade, so a run
interrupted at any point resumes without asking (or paying) a provider twice.

Rows: ``{"kind": "answer", "item", "model", "source", "text", "finish_reason", "usage",
"usage_estimated", "cost_nusd", "correct"}`` keyed by (item, model), and ``{"kind": "grade",
"item", "model", "grading", "verdict", "parse_status", "score", "raw_output", "usage",
"cost_nusd"}`` keyed by (item, model, grading): ``grading`` is a fingerprint of the reference
model and the grader settings, so a grade made against another reference or with another grader
is not reused. A row that cost money (a live call) is fsynced before the run goes on; rows read
from recordings are flushed in batches and fsynced at the end. A crash can leave at most one
partial last line: it is cut off when the log is opened again. Failed calls are never written,
so a resumed run tries them again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from router.errors import InvalidInput
from router.pricing import Usage

RESULTS_FILE = "results.jsonl"
"""The log's name inside ``--out``."""


def usage_row(usage: Usage) -> dict[str, int]:
    """A :class:`Usage` as the log stores it (tokens)."""
    return {
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
    }


def usage_of(row: dict[str, Any]) -> Usage:
    """The :class:`Usage` of a logged ``usage`` object."""
    return Usage(
        input_tokens=int(row.get("input_tokens", 0)),
        cached_input_tokens=int(row.get("cached_input_tokens", 0)),
        cache_write_tokens=int(row.get("cache_write_tokens", 0)),
        output_tokens=int(row.get("output_tokens", 0)),
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """One model's answer to one item. ``source``: ``recorded`` (from the held-out set) or
    ``live`` (a provider call of this run or an earlier one). ``cost_nusd`` None = unpriced.
    ``correct``: against the gold answer (recorded, or computed), None when unknown."""

    item: str
    model: str
    source: str
    text: str | None
    finish_reason: str
    usage: Usage
    usage_estimated: bool
    cost_nusd: int | None
    correct: bool | None

    def row(self) -> dict[str, Any]:
        return {
            "kind": "answer",
            "item": self.item,
            "model": self.model,
            "source": self.source,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": usage_row(self.usage),
            "usage_estimated": self.usage_estimated,
            "cost_nusd": self.cost_nusd,
            "correct": self.correct,
        }

    @classmethod
    def of(cls, row: dict[str, Any]) -> Answer:
        return cls(
            item=str(row["item"]),
            model=str(row["model"]),
            source=str(row["source"]),
            text=row.get("text"),
            finish_reason=str(row.get("finish_reason", "stop")),
            usage=usage_of(row.get("usage") or {}),
            usage_estimated=bool(row.get("usage_estimated", False)),
            cost_nusd=row.get("cost_nusd"),
            correct=row.get("correct"),
        )


@dataclass(frozen=True, slots=True)
class Grade:
    """The configured grader's verdict on one answer, against the reference model
    (``agree`` | ``disagree`` | ``invalid`` | ``refused``), with what grading cost."""

    item: str
    model: str
    grading: str
    verdict: str
    parse_status: str
    score: float | None
    raw_output: str
    usage: Usage
    cost_nusd: int | None

    def row(self) -> dict[str, Any]:
        return {
            "kind": "grade",
            "item": self.item,
            "model": self.model,
            "grading": self.grading,
            "verdict": self.verdict,
            "parse_status": self.parse_status,
            "score": self.score,
            "raw_output": self.raw_output,
            "usage": usage_row(self.usage),
            "cost_nusd": self.cost_nusd,
        }

    @classmethod
    def of(cls, row: dict[str, Any]) -> Grade:
        return cls(
            item=str(row["item"]),
            model=str(row["model"]),
            grading=str(row["grading"]),
            verdict=str(row["verdict"]),
            parse_status=str(row["parse_status"]),
            score=row.get("score"),
            raw_output=str(row.get("raw_output", "")),
            usage=usage_of(row.get("usage") or {}),
            cost_nusd=row.get("cost_nusd"),
        )


class ResultsLog:
    """The results log of one ``--out`` folder, opened for appending.

    Raises:
        InvalidInput: a complete line of an existing log is not a row this module wrote
            (names the file and line; ``field="out"``).
    """

    BATCH = 500
    """Rows from recordings written between two fsyncs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[tuple[str, str], Answer] = {}
        self.grades: dict[tuple[str, str, str], Grade] = {}
        self.resumed = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._read()
        self._file: IO[str] = path.open("a", encoding="utf-8", newline="\n")
        self._unsynced = 0

    def _read(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a partial last line from a crash: cut it off
            with self.path.open("r+b") as handle:
                handle.truncate(end)
        for lineno, line in enumerate(data[:end].decode("utf-8").split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row["kind"] == "answer":
                    answer = Answer.of(row)
                    self.answers[(answer.item, answer.model)] = answer
                elif row["kind"] == "grade":
                    grade = Grade.of(row)
                    self.grades[(grade.item, grade.model, grade.grading)] = grade
                else:
                    raise KeyError("kind")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"{self.path} line {lineno}: not a results row ({exc}); "
                    "use another --out folder or remove the file",
                    field="out",
                ) from exc
            self.resumed += 1

    def add_answer(self, answer: Answer, *, paid: bool) -> None:
        """Keep ``answer`` and append it; fsynced at once when ``paid``."""
        self.answers[(answer.item, answer.model)] = answer
        self._append(answer.row(), paid)

    def add_grade(self, grade: Grade, *, paid: bool) -> None:
        """Keep ``grade`` and append it; fsynced at once when ``paid``."""
        self.grades[(grade.item, grade.model, grade.grading)] = grade
        self._append(grade.row(), paid)

    def _append(self, row: dict[str, Any], sync: bool) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        self._unsynced += 1
        if sync or self._unsynced >= self.BATCH:
            self.sync()

    def sync(self) -> None:
        """Flush and fsync what was appended."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._unsynced = 0

    def close(self) -> None:
        """fsync and close."""
        if not self._file.closed:
            self.sync()
            self._file.close()
