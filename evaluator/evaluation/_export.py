"""``tierwise dataset export``: sampled outcomes of your own traffic as a held-out set, in the
format of ``datasets/README.md``, so ``tierwise eval`` can try candidate models on it.

One line per sample decided in ``[since, until)`` of the chosen classes (all when none are
named): ``id`` ``<name>/<decision id>``, ``task_type`` the sample's task class, ``messages``
its input, ``outputs[<model that answered>]`` its text, the outcome's usage, and its grade as
``judge`` (``model`` the reference model, ``prompt_name`` the grader, ``judgment`` the grade's
raw output: a judge's explanation, or the reference's own answer; ``score``; ``verdict``). A
comparison grader's raw output is the reference model's answer, so it is also written as
``reference_answer`` and as the reference model's recorded output. A shadow probe's grade (it
grades another model's answer) is not exported, nor is a grade not made yet: no ``judge``.

The manifest beside the file gets (or replaces) the file's entry: row count, sha256, bytes,
task types, and the grader spec per class from the latest applied policy, so an eval grades
the export the way production did.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import aliased
from sqlmodel import and_, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.datasets import MANIFEST
from evaluator.evaluation._run import GRADING_FIELDS
from evaluator.graders import JUDGE_GRADERS
from evaluator.models import Grade
from router.errors import InvalidInput
from router.models import Outcome, Sample
from router.table import latest_policy

_COMPARISON = frozenset({"exact", "label", "json_fields", "numeric", "choice", "reference_answer"})


def _line(
    name: str, sample: Sample, outcome: Outcome | None, grade: Grade | None
) -> dict[str, Any]:
    model = sample.answer_model or sample.model
    out: dict[str, Any] = {"text": sample.output_text}
    if outcome is not None and sample.answer_model is None:
        out["usage"] = {
            "input_tokens": outcome.input_tokens,
            "cached_input_tokens": outcome.cached_input_tokens,
            "cache_write_tokens": outcome.cache_write_tokens,
            "output_tokens": outcome.output_tokens,
        }
    line: dict[str, Any] = {
        "id": f"{name}/{sample.decision_id}",
        "dataset": name,
        "task_type": sample.task_class,
        "messages": sample.input_messages,
        "outputs": {model: out},
    }
    if grade is not None:
        out["judge"] = {
            "model": grade.reference_model,
            "prompt_name": grade.grader,
            "user_prompt": None,
            "judgment": grade.raw_output,
            "score": grade.score,
            "verdict": grade.verdict,
        }
        if grade.grader in _COMPARISON and grade.verdict in ("agree", "disagree"):
            line["reference_answer"] = grade.raw_output
            if grade.reference_model != model:
                line["outputs"][grade.reference_model] = {"text": grade.raw_output}
    return line


async def export_samples(
    session: AsyncSession,
    path: Path,
    *,
    name: str,
    since: datetime | None,
    until: datetime | None,
    classes: Sequence[str] = (),
) -> int:
    """Write the held-out set of the module doc to ``path`` (JSONL, keys sorted) and its
    manifest entry; returns the number of lines.

    Raises:
        InvalidInput: ``name`` is empty or holds a ``/`` (``field="name"``), or nothing was
            sampled in the range and classes (``field="since"``).
    """
    if not name or "/" in name:
        raise InvalidInput(f"name {name!r}: one word without '/'", field="name")
    real = aliased(Grade)
    stmt = (
        select(Sample, Outcome, real)
        .join(Outcome, col(Outcome.decision_id) == col(Sample.decision_id), isouter=True)
        .join(
            real,
            and_(col(real.decision_id) == col(Sample.decision_id), col(real.shadow).is_(False)),
            isouter=True,
        )
        .order_by(col(Sample.decided_at), col(Sample.decision_id))
    )
    if since is not None:
        stmt = stmt.where(col(Sample.decided_at) >= since)
    if until is not None:
        stmt = stmt.where(col(Sample.decided_at) < until)
    if classes:
        stmt = stmt.where(col(Sample.task_class).in_(list(classes)))
    rows = (await session.exec(stmt)).all()
    if not rows:
        raise InvalidInput("no sampled outcomes in that range and those classes", field="since")
    text = "".join(
        json.dumps(_line(name, s, o, g), ensure_ascii=False, sort_keys=True) + "\n"
        for s, o, g in rows
    )
    task_types = sorted({s.task_class for s, _, _ in rows})
    policy = await latest_policy(session)
    graders = []
    if policy is not None:
        for task in task_types:
            settings = policy.settings_for(task)
            spec = settings.model_dump(include=set(GRADING_FIELDS), exclude_none=True)
            if settings.grader in JUDGE_GRADERS:  # the judge's calibration travels with it
                spec["judge_kappa"] = settings.judge_kappa
            graders.append({"match": task, **{k: v for k, v in spec.items() if v is not None}})
    entry = {
        "name": name,
        "file": path.name,
        "kind": "held_out",
        "rows": len(rows),
        "bytes": len(text.encode()),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "task_types": task_types,
        "models": {},
        "graders": graders,
        "description": f"sampled outcomes exported by tierwise dataset export ({len(rows)})",
        "source": [{"name": "tierwise dataset export", "since": str(since), "until": str(until)}],
    }
    await asyncio.to_thread(_write, path, text, entry)
    return len(rows)


def _write(path: Path, text: str, entry: dict[str, Any]) -> None:
    """Write the set and put ``entry`` into the manifest beside it (replacing the file's own).

    Raises:
        InvalidInput: the manifest there is not a JSON list of objects.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    manifest = path.parent / MANIFEST
    entries: list[dict[str, Any]] = []
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text("utf-8"))
            entries = [e for e in old if e.get("file") != path.name]
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise InvalidInput(f"{manifest}: not a JSON list of objects", field="manifest") from exc
    entries.append(entry)
    manifest.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n", encoding="utf-8")
