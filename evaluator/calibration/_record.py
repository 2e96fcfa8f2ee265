"""A measured judge written into a policy file (``judge_calibration``), and the classes of a
policy that can never escalate for want of a calibrated judge."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import tomlkit
from tomlkit.items import AoT, InlineTable, Table

from evaluator.calibration._agreement import AgreementStats, JudgeCalibration
from evaluator.calibration._gate import may_escalate
from evaluator.graders import JUDGE_GRADERS
from router.errors import InvalidInput, PolicyError
from router.policy import JudgeCalibrationSetting, Policy, parse_policy

DEFAULTS_CLASS = "(any other task type)"
"""How :func:`uncalibrated_classes` names the classes no rule or glob names (the defaults)."""


def calibration_record(
    row: JudgeCalibration, *, judge: str, measured_on: date, grader: str = "judge_pairwise"
) -> JudgeCalibrationSetting:
    """The ``judge_calibration`` setting for ``judge`` from its calibration ``row`` (its ``all``
    group, or its only one), with the kappa of the verdict the class's ``grader`` acts on:
    ``judge_pairwise`` decides on both orders (a flip is a tie), so the both-orders kappa when
    both were asked; a single-answer judge (``judge_single``) sees one presentation, so the
    lower of the per-order kappas (the conservative one, with its own interval). With one
    order asked, that order's. With its interval and n.

    Raises:
        InvalidInput: kappa is undefined on the row (no valid verdicts, or one category only;
            ``field="judge"``).
    """
    orders = [s for s in row.orders.values() if s.kappa.kappa is not None]
    stats: AgreementStats | None
    if grader == "judge_pairwise" and row.both is not None:
        stats = row.both
    else:
        stats = min(orders, key=lambda s: s.kappa.kappa or 0.0) if orders else None
    est = None if stats is None else stats.kappa
    if est is None or est.kappa is None:
        raise InvalidInput(
            f"judge {judge}: kappa is undefined on {row.dataset} (no valid verdicts, or a single "
            "category): nothing to record",
            field="judge",
        )
    return JudgeCalibrationSetting(
        judge=judge,
        kappa=round(est.kappa, 4),
        ci_low=None if est.ci_low is None else round(est.ci_low, 4),
        ci_high=None if est.ci_high is None else round(est.ci_high, 4),
        n=est.n,
        dataset=row.dataset,
        measured_on=measured_on,
    )


def _inline(record: JudgeCalibrationSetting) -> InlineTable:
    table = tomlkit.inline_table()
    for key, value in record.model_dump(exclude_none=True).items():
        table[key] = value
    return table


def write_calibration(
    path: str | Path, record: JudgeCalibrationSetting, *, classes: str | None = None
) -> Policy:
    """Record ``record`` in the policy file at ``path`` as ``judge_calibration``: in
    ``[defaults]`` (every class, counted for those whose judge is ``record.judge``), or with
    ``classes`` (a shell glob) in the ``[[classes]]`` entry whose ``match`` is that glob (added
    at the end when there is none). Comments and layout are kept (tomlkit); the new text is
    validated as a policy before it replaces the file (atomically), and returned parsed.

    Raises:
        PolicyError: the file cannot be read, is not a valid policy before or after the edit.
    """
    p = Path(path)
    try:
        body = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {p}: {exc.strerror}") from exc
    parse_policy(body, source=str(p))  # refuse to edit a file that is not a policy
    doc = tomlkit.parse(body)
    if classes is None:
        defaults = doc.get("defaults")
        if not isinstance(defaults, Table):
            defaults = tomlkit.table()
            doc["defaults"] = defaults
        defaults["judge_calibration"] = _inline(record)
    else:
        entries = doc.get("classes")
        if entries is None:
            entries = tomlkit.aot()
            doc["classes"] = entries
        if not isinstance(entries, AoT):
            raise PolicyError(f"{p}: classes is not an array of tables", field="classes")
        found = next((t for t in entries if t.get("match") == classes), None)
        if found is None:
            found = tomlkit.table()
            found["match"] = classes
            entries.append(found)
        found["judge_calibration"] = _inline(record)
    text = tomlkit.dumps(doc)
    policy = parse_policy(text, source=str(p))
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return policy


def policy_classes(policy: Policy) -> list[str]:
    """The task classes a policy names (each rule's task types with its suffix, and every glob
    of ``[[classes]]`` taken as a name), sorted, then :data:`DEFAULTS_CLASS`."""
    names = {t + r.class_suffix for r in policy.spec.rules for t in r.task_types}
    names |= {c.match for c in policy.spec.classes}
    return [*sorted(names), DEFAULTS_CLASS]


@dataclass(frozen=True, slots=True)
class Uncalibrated:
    """A judge-graded class that can never escalate: its grader, its judge, and why."""

    task_class: str
    grader: str
    judge: str
    why: str


def uncalibrated_classes(policy: Policy) -> list[Uncalibrated]:
    """Every judge-graded class of :func:`policy_classes` that
    :func:`~evaluator.calibration.may_escalate` refuses: it will be graded and reported, but
    never escalated."""
    out = []
    for name in policy_classes(policy):
        key = "\0no class\0" if name == DEFAULTS_CLASS else name
        settings = policy.settings_for(key)
        if settings.grader not in JUDGE_GRADERS:
            continue
        judge = policy.reference_model(key)
        ok, why = may_escalate(settings, judge)
        if not ok:
            out.append(Uncalibrated(name, settings.grader, judge, why))
    return out


def calibrated_classes(policy: Policy, judge: str) -> list[str]:
    """The judge-graded classes of :func:`policy_classes` judged by ``judge`` that may now
    escalate."""
    out = []
    for name in policy_classes(policy):
        key = "\0no class\0" if name == DEFAULTS_CLASS else name
        settings = policy.settings_for(key)
        judged = settings.grader in JUDGE_GRADERS and policy.reference_model(key) == judge
        if judged and may_escalate(settings, judge)[0]:
            out.append(name)
    return out
