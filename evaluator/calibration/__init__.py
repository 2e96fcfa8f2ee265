"""Judge calibration: how far a judge model agrees with human labels, and whether a class graded
by that judge may escalate.

Data: pairwise judge-calibration sets in ``datasets/`` (``llmbar.jsonl``, ``pandalm.jsonl``; format
in ``datasets/README.md``): per item the human label(s) and, per judge, the recorded verdict with
output_1 shown first (``order_12``) and swapped (``order_21``). Verdict codes: 1 = output_1
better, 2 = output_2 better, 0 = tie. Recorded verdicts are replayed offline;
:func:`judge_live` measures a catalog model instead, through the provider registry, with the
prompt and reading of ``judge_pairwise`` grading. :func:`calibration_record` turns a result
into the ``judge_calibration`` policy setting that lets judge-graded classes escalate.

Statistics (pure functions over numpy arrays; the random generator is passed in):

- **agreement**: judge verdict == human consensus, over the items where the judge gave a verdict;
  items without one are counted apart as ``invalid``/``refused``, exactly as
  grading keeps them out of the disagreement rate. ``accuracy`` divides by every item instead
  (a missing verdict counts as wrong): that is the LLMBar authors' ``correct_*`` definition.
- **Cohen's kappa** (Cohen 1960, "A coefficient of agreement for nominal scales", Educ. Psychol.
  Meas. 20:37-46): (p_o - p_e) / (1 - p_e) over the verdict categories, with its 95% interval
  from the large-sample standard error of Fleiss, Cohen & Everitt (1969), "Large sample
  standard errors of kappa and weighted kappa", Psychol. Bull. 72(5):323-327 (also Fleiss,
  Levin & Paik, *Statistical Methods for Rates and Proportions*, 3rd ed., eq. 18.13):
  kappa +- z * SE, clipped to [-1, 1]. :func:`kappa_bootstrap_interval` gives a percentile
  bootstrap instead.
- **human consensus**: the label most annotators gave (PandaLM: majority of 3); an item whose
  top labels tie has no consensus and is left out of agreement and kappa (counted as
  ``no_consensus``; PandaLM v1 has none).
- **both orders**: when a judge saw both orders, the combined verdict is the common one if
  both orders agree, else a tie (0): position bias is not evidence (MT-Bench's rule, Zheng et
  al. 2023). ``flips`` counts items whose two valid verdicts differ.
"""

from __future__ import annotations

from evaluator.calibration._agreement import (
    AgreementStats,
    JudgeCalibration,
    agreement_stats,
    calibrate,
    calibrate_judge,
    combine_orders,
)
from evaluator.calibration._data import (
    INVALID,
    NO_CONSENSUS,
    NOT_ASKED,
    ORDERS,
    CalibrationItem,
    CalibrationSet,
    Verdict,
    arrays,
    load_calibration_set,
    majority_label,
)
from evaluator.calibration._gate import effective_kappa, may_escalate
from evaluator.calibration._kappa import (
    KappaEstimate,
    cohen_kappa,
    confusion_matrix,
    kappa_bootstrap_interval,
    kappa_from_table,
    kappa_interval,
    kappa_se,
)
from evaluator.calibration._live import LiveRun, judge_live
from evaluator.calibration._llmbar import (
    llmbar_authors_statistics,
    llmbar_reproduction,
    load_llmbar_statistics,
    same_statistics,
)
from evaluator.calibration._record import (
    DEFAULTS_CLASS,
    Uncalibrated,
    calibrated_classes,
    calibration_record,
    policy_classes,
    uncalibrated_classes,
    write_calibration,
)

__all__ = [
    "DEFAULTS_CLASS",
    "INVALID",
    "NOT_ASKED",
    "NO_CONSENSUS",
    "ORDERS",
    "AgreementStats",
    "CalibrationItem",
    "CalibrationSet",
    "JudgeCalibration",
    "KappaEstimate",
    "LiveRun",
    "Uncalibrated",
    "Verdict",
    "agreement_stats",
    "arrays",
    "calibrate",
    "calibrate_judge",
    "calibrated_classes",
    "calibration_record",
    "cohen_kappa",
    "combine_orders",
    "confusion_matrix",
    "effective_kappa",
    "judge_live",
    "kappa_bootstrap_interval",
    "kappa_from_table",
    "kappa_interval",
    "kappa_se",
    "llmbar_authors_statistics",
    "llmbar_reproduction",
    "load_calibration_set",
    "load_llmbar_statistics",
    "majority_label",
    "may_escalate",
    "policy_classes",
    "same_statistics",
    "uncalibrated_classes",
    "write_calibration",
]
