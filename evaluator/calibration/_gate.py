"""Whether a judge-graded class may escalate."""

from __future__ import annotations

from evaluator.graders import JUDGE_GRADERS
from router.policy import ClassSettings


def may_escalate(settings: ClassSettings) -> tuple[bool, str]:
    """Whether a class with ``settings`` may be escalated on its grades, and why.

    A class graded by a judge (``judge_single``, ``judge_pairwise``) escalates only when its
    judge was calibrated against human labels (``judge_kappa`` set, e.g. from
    ``tierwise eval judge``) and that kappa is at least ``min_judge_kappa`` (default 0.6, the
    lower edge of "substantial" agreement in Landis & Koch 1977, Biometrics 33:159-174). Such
    a class still grades; its disagreement rate is reported, but it cannot move traffic.
    Other graders compare answers mechanically and always may.
    """
    if settings.grader not in JUDGE_GRADERS:
        return True, f"grader '{settings.grader}' needs no judge calibration"
    if settings.judge_kappa is None:
        return False, (
            f"grader '{settings.grader}' uses an uncalibrated judge (judge_kappa unset; "
            "measure it with `tierwise eval judge`)"
        )
    if settings.judge_kappa < settings.min_judge_kappa:
        return False, (
            f"judge kappa {settings.judge_kappa:.2f} is below the floor "
            f"min_judge_kappa {settings.min_judge_kappa:.2f}"
        )
    return True, (
        f"judge kappa {settings.judge_kappa:.2f} >= min_judge_kappa {settings.min_judge_kappa:.2f}"
    )
