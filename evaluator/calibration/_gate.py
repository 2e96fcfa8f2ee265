"""Whether a judge-graded class may escalate."""

from __future__ import annotations

from evaluator.graders import JUDGE_GRADERS
from router.policy import ClassSettings


def effective_kappa(settings: ClassSettings, judge: str | None = None) -> tuple[float | None, str]:
    """The judge kappa a class's escalation gate uses, and where it comes from.

    ``judge_calibration`` (measured by ``tierwise eval judge --write-policy``) wins over a
    hand-set ``judge_kappa``; it counts only for the judge it measured: when ``judge`` (the
    class's reference model) is given and differs, the class has no calibrated judge (None).
    """
    cal = settings.judge_calibration
    if cal is not None:
        if judge is not None and cal.judge != judge:
            return None, (
                f"judge_calibration measured {cal.judge}, but the class is judged by {judge}"
            )
        ci = (
            f" [{cal.ci_low:.2f}, {cal.ci_high:.2f}]"
            if cal.ci_low is not None and cal.ci_high is not None
            else ""
        )
        return cal.kappa, (
            f"judge {cal.judge} kappa {cal.kappa:.2f}{ci} on {cal.dataset} (n={cal.n}, "
            f"{cal.measured_on.isoformat()})"
        )
    if settings.judge_kappa is not None:
        return settings.judge_kappa, f"judge kappa {settings.judge_kappa:.2f} (judge_kappa)"
    return None, "judge_kappa unset and no judge_calibration"


def may_escalate(settings: ClassSettings, judge: str | None = None) -> tuple[bool, str]:
    """Whether a class with ``settings`` (judged by ``judge``, its reference model, when given)
    may be escalated on its grades, and why.

    A class graded by a judge (``judge_single``, ``judge_pairwise``) escalates only when its
    judge was calibrated against human labels (``judge_calibration`` for that judge, from
    ``tierwise eval judge --write-policy``, or a hand-set ``judge_kappa``) and that kappa is
    at least ``min_judge_kappa`` (default 0.6, the lower edge of "substantial" agreement in
    Landis & Koch 1977, Biometrics 33:159-174). Such a class still grades; its disagreement
    rate is reported, but it cannot move traffic. Other graders compare answers mechanically
    and always may.
    """
    if settings.grader not in JUDGE_GRADERS:
        return True, f"grader '{settings.grader}' needs no judge calibration"
    kappa, source = effective_kappa(settings, judge)
    if kappa is None:
        return False, (
            f"grader '{settings.grader}' uses an uncalibrated judge ({source}; "
            "measure it with `tierwise eval judge --write-policy`)"
        )
    if kappa < settings.min_judge_kappa:
        return False, f"{source} is below the floor min_judge_kappa {settings.min_judge_kappa:.2f}"
    return True, f"{source} >= min_judge_kappa {settings.min_judge_kappa:.2f}"
