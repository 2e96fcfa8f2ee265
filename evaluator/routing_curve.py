"""Router metrics for class-level routing between a cheap and a strong model (pure: no I/O but
the dataset helpers at the end).

A **class-level router** sends every request of a task class to one model. Its knob is a
threshold on each class's estimated quality gain (strong minus cheap, estimated on a
calibration split): classes whose gain is at or above the threshold go to the strong model.
Sweeping the threshold from +inf down to -inf gives one point per distinct estimated gain,
from all-cheap to all-strong; each point is measured on a disjoint test split as
(strong share, quality), where strong share is the fraction of test items sent to the strong
model and quality the mean score of the answers the router picked.

Metrics, as the routing literature defines them (Ong et al., "RouteLLM: Learning to Route LLMs
with Preference Data", arXiv 2406.18665 v4, section 5.1), on the test split:

- **PGR** (performance gap recovered) of a point: ``(q - q_cheap) / (q_strong - q_cheap)``,
  q_cheap / q_strong the quality of sending every test item to the cheap / strong model.
- **Monotone envelope**: the points sorted by strong share, keeping each point whose quality
  beats every point of lower share, joined by straight lines (a coin flip between two routers
  reaches every point between them) and flat after the best one. More strong calls never
  lower the envelope, so "the quality at share x" is well defined.
- **CPT(x%)** (call-performance threshold): the smallest strong share at which the envelope's
  PGR reaches x%, solved exactly on its segments; a fraction in [0, 1].
- **APGR** (average PGR): the area under the envelope's PGR against strong share over [0, 1]
  (exact: the envelope is piecewise linear).

Baselines. **Random**: each request goes to the strong model with probability x; its expected
PGR is x, so APGR 0.5, CPT(50%) 0.5, CPT(80%) 0.8 exactly (RouteLLM's random router measures
0.500 and 49.03% on MT-Bench). **Oracle**: per item, the strong model exactly where it scores
higher, items routed in decreasing order of gain; computed per seed on the test split.

Splits. Per seed, each class's items are shuffled (``numpy.random.default_rng(seed)``) and
``round(calibration_share * n)`` of them (at least 1 and at most n - 1 when n >= 2) estimate
the class's gain; the rest are the test split. A class with one item has it in the test split
and takes the pooled calibration gain as its estimate. Figures are reported as mean, min and
max over the seeds; ``points`` is the mean envelope over seeds on a fixed grid of strong shares.

Scoring conventions (RouteLLM's): MT-Bench, the mean GPT-4 single-answer score (1-10) over
both turns of a question; MMLU and GSM8K, accuracy (the recorded ``correct`` flags).
Decontamination: RouteLLM drops the eval prompts that overlap its routers' training data
(``routellm/evals/*/contaminated_prompts.jsonl``, the ``eval_prompt`` field: GSM8K 12, MMLU 5,
MT-Bench 8); :func:`curve_items` drops the items whose first user message is one of them.

Why class-level routing is not per-prompt routing: it can only reorder whole classes, so its
envelope has as many corners as the benchmark has classes. GSM8K is a single class: the
envelope is the straight line from all-cheap to all-strong, exactly the random router (APGR
0.5). Beating random there needs a router that looks at each prompt (RouteLLM's matrix
factorisation, BERT or causal-LLM classifiers, or similarity-weighted ranking), or a finer
task classification the caller supplies.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.datasets import load_held_out
from router.errors import InvalidInput
from router.tokens import text_of

GRID = tuple(i / 20 for i in range(21))
"""The strong shares (0, 0.05, ..., 1) the mean curve ``points`` is given at."""

ROUTELLM_PUBLISHED: dict[str, list[dict[str, Any]]] = {
    # Ong et al., "RouteLLM: Learning to Route LLMs with Preference Data", arXiv 2406.18665 v4,
    # Tables 1-3: GPT-4-1106-preview (strong) vs Mixtral-8x7B (cheap), routers trained on
    # Chatbot Arena data; the figures as quoted in tierwise issue 9. CPT as a fraction; None:
    # not quoted there.
    "mt_bench": [
        {
            "router": "matrix factorization (judge-augmented)",
            "apgr": 0.802,
            "cpt_50": 0.1340,
            "cpt_80": None,
        },
        {"router": "random", "apgr": 0.500, "cpt_50": 0.4903, "cpt_80": None},
    ],
    "mmlu": [{"router": "best published router", "apgr": 0.603, "cpt_50": None, "cpt_80": None}],
    "gsm8k": [{"router": "best published router", "apgr": 0.622, "cpt_50": None, "cpt_80": None}],
}
"""RouteLLM's published figures per benchmark (source in the comment above)."""


@dataclass(frozen=True)
class CurveItem:
    """One benchmark item: its task class and both models' scores on it (same scale for both:
    accuracy 0/1, or an MT-Bench score 1-10)."""

    item_id: str
    task_class: str
    cheap_score: float
    strong_score: float


Point = tuple[float, float]
"""(strong share in [0, 1], quality)."""


def envelope(points: Iterable[Point]) -> list[Point]:
    """The monotone envelope's vertices (module doc), sorted by share: per share the best
    quality, then only the points that beat every point of lower share. The first vertex is
    the lowest-share point (share 0 for a routing curve)."""
    best: dict[float, float] = {}
    for share, quality in points:
        best[share] = max(quality, best.get(share, -math.inf))
    out: list[Point] = []
    for share in sorted(best):
        if not out or best[share] > out[-1][1]:
            out.append((share, best[share]))
    return out


def envelope_at(vertices: Sequence[Point], share: float) -> float:
    """The envelope's quality at ``share`` (linear between vertices, flat after the last)."""
    if share <= vertices[0][0]:
        return vertices[0][1]
    for (s0, q0), (s1, q1) in itertools.pairwise(vertices):
        if share <= s1:
            return q0 + (q1 - q0) * (share - s0) / (s1 - s0)
    return vertices[-1][1]


def _pgr(quality: float, q_cheap: float, q_strong: float) -> float:
    return (quality - q_cheap) / (q_strong - q_cheap)


def apgr(vertices: Sequence[Point], q_cheap: float, q_strong: float) -> float:
    """Area under the envelope's PGR over strong share [0, 1] (exact trapezoids; flat after the
    last vertex). ``vertices`` from :func:`envelope`, the first at share 0."""
    pgr = [(s, _pgr(q, q_cheap, q_strong)) for s, q in vertices]
    area = sum((s1 - s0) * (p0 + p1) / 2 for (s0, p0), (s1, p1) in itertools.pairwise(pgr))
    return area + (1.0 - pgr[-1][0]) * pgr[-1][1]


def cpt(vertices: Sequence[Point], q_cheap: float, q_strong: float, target: float) -> float | None:
    """The smallest strong share at which the envelope's PGR reaches ``target`` (0.5 for
    CPT(50%)), solved on the segment where it crosses; None if it never does."""
    pgr = [(s, _pgr(q, q_cheap, q_strong)) for s, q in vertices]
    if pgr[0][1] >= target:
        return pgr[0][0]
    for (s0, p0), (s1, p1) in itertools.pairwise(pgr):
        if p1 >= target:
            return s0 + (s1 - s0) * (target - p0) / (p1 - p0)
    return None


def split(
    items: Sequence[CurveItem], seed: int, calibration_share: float
) -> tuple[list[CurveItem], list[CurveItem]]:
    """(calibration, test) for ``seed``: stratified by class (module doc), disjoint, together
    every item once. Deterministic for a seed and an item order."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[CurveItem]] = defaultdict(list)
    for item in items:
        by_class[item.task_class].append(item)
    cal: list[CurveItem] = []
    test: list[CurveItem] = []
    for name in sorted(by_class):
        members = by_class[name]
        order = rng.permutation(len(members))
        n = len(members)
        k = 0 if n == 1 else min(max(round(calibration_share * n), 1), n - 1)
        cal.extend(members[i] for i in order[:k])
        test.extend(members[i] for i in order[k:])
    return cal, test


def class_gains(calibration: Sequence[CurveItem]) -> dict[str, float]:
    """Mean (strong - cheap) score per class over ``calibration``."""
    sums: dict[str, list[float]] = defaultdict(list)
    for item in calibration:
        sums[item.task_class].append(item.strong_score - item.cheap_score)
    return {c: float(np.mean(v)) for c, v in sums.items()}


def class_curve(
    test: Sequence[CurveItem], gains: Mapping[str, float], pooled: float
) -> list[Point]:
    """The class-level router's points on ``test``: classes sent to the strong model in
    decreasing order of estimated gain (``pooled`` for a class ``gains`` lacks), classes with
    equal estimates together (no threshold separates them); from share 0 to share 1."""
    n = len(test)
    groups: dict[float, list[CurveItem]] = defaultdict(list)
    for item in test:
        groups[gains.get(item.task_class, pooled)].append(item)
    total = sum(i.cheap_score for i in test)
    routed = 0
    points = [(0.0, total / n)]
    for gain in sorted(groups, reverse=True):
        for item in groups[gain]:
            total += item.strong_score - item.cheap_score
            routed += 1
        points.append((routed / n, total / n))
    return points


def oracle_curve(test: Sequence[CurveItem]) -> list[Point]:
    """The oracle's points on ``test``: items with a positive gain routed one by one in
    decreasing order of gain (the rest stay on the cheap model), then share 1."""
    n = len(test)
    gains = sorted((i.strong_score - i.cheap_score for i in test), reverse=True)
    total = sum(i.cheap_score for i in test)
    points = [(0.0, total / n)]
    for j, gain in enumerate(gains, start=1):
        if gain <= 0:
            break
        total += gain
        points.append((j / n, total / n))
    points.append((1.0, sum(i.strong_score for i in test) / n))
    return points


def _figures(points: Sequence[Point], q_cheap: float, q_strong: float) -> dict[str, Any]:
    env = envelope(points)
    return {
        "envelope": env,
        "apgr": apgr(env, q_cheap, q_strong),
        "cpt_50": cpt(env, q_cheap, q_strong, 0.5),
        "cpt_80": cpt(env, q_cheap, q_strong, 0.8),
    }


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}


def routing_curves(
    benchmark: str,
    items: Sequence[CurveItem],
    *,
    cheap_model: str,
    strong_model: str,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    calibration_share: float = 0.5,
) -> dict[str, Any]:
    """The cost-quality curve of class-level routing on ``items`` and its metrics (module doc),
    beside the random router, the oracle and RouteLLM's published figures for ``benchmark``
    (:data:`ROUTELLM_PUBLISHED`; empty for another benchmark).

    Returns a JSON-able dict: ``benchmark``, ``cheap_model``, ``strong_model``, ``seeds``,
    ``calibration_share``; ``apgr``, ``cpt_50``, ``cpt_80`` each ``{"mean", "min", "max"}``
    over the seeds (CPT as a fraction of strong calls, 0-1); ``random`` and ``oracle`` each
    ``{"apgr", "cpt_50", "cpt_80"}`` (the oracle's mean over seeds); ``points``, the mean
    envelope over seeds as ``[{"strong_share", "quality"}]`` on :data:`GRID`; ``routellm``,
    ``[{"router", "apgr", "cpt_50", "cpt_80"}]``; ``notes``, sentences for a reader.

    Raises:
        InvalidInput: fewer than 2 items, no seed, ``calibration_share`` outside (0, 1), a
            score that is not finite (``field`` names it), or a test split on which the strong
            model does not beat the cheap one (PGR undefined; ``field="items"``).
    """
    if len(items) < 2:
        raise InvalidInput(f"{benchmark}: at least 2 items are needed", field="items")
    if not seeds:
        raise InvalidInput("seeds: give at least one seed", field="seeds")
    if not 0 < calibration_share < 1:
        raise InvalidInput("calibration_share must be in (0, 1)", field="calibration_share")
    for item in items:
        if not (math.isfinite(item.cheap_score) and math.isfinite(item.strong_score)):
            raise InvalidInput(f"{item.item_id}: scores must be finite", field="items")
    runs: list[dict[str, Any]] = []
    oracles: list[dict[str, Any]] = []
    for seed in seeds:
        cal, test = split(items, seed, calibration_share)
        q_cheap = sum(i.cheap_score for i in test) / len(test)
        q_strong = sum(i.strong_score for i in test) / len(test)
        if q_strong <= q_cheap:
            raise InvalidInput(
                f"{benchmark}, seed {seed}: {strong_model} does not beat {cheap_model} on the test "
                f"split ({q_strong:.4f} <= {q_cheap:.4f}): PGR is undefined",
                field="items",
            )
        gains = class_gains(cal)
        pooled = float(np.mean([i.strong_score - i.cheap_score for i in cal])) if cal else 0.0
        runs.append(_figures(class_curve(test, gains, pooled), q_cheap, q_strong))
        oracles.append(_figures(oracle_curve(test), q_cheap, q_strong))
    classes = sorted({i.task_class for i in items})
    notes = [
        f"class-level routing over {len(classes)} task class(es); class gains estimated on a "
        f"{calibration_share:.0%} calibration split, the curve measured on the disjoint rest; "
        f"{len(seeds)} seed(s), mean [min, max]",
        "random: PGR = strong share in expectation (APGR 0.5, CPT(50%) 0.5, CPT(80%) 0.8)",
        "oracle: per item, the strong model only where it scores higher; its APGR can pass 1 "
        "where the cheap model is right and the strong one wrong",
    ]
    if len(classes) == 1:
        notes.append(
            f"{benchmark} is a single class: class-level routing can only send all of it to one "
            "model or mix the two at random, so it cannot beat the random router here; a "
            "per-prompt router (RouteLLM's matrix factorization or classifiers) or a finer task "
            "classification supplied by the caller would"
        )
    published = ROUTELLM_PUBLISHED.get(benchmark, [])
    if published:
        notes.append(
            "RouteLLM (arXiv 2406.18665 v4, Tables 1-3) routes per prompt with routers trained on "
            "Chatbot Arena preferences; tierwise routes per task class from this set's own split"
        )
    return {
        "benchmark": benchmark,
        "cheap_model": cheap_model,
        "strong_model": strong_model,
        "seeds": [int(s) for s in seeds],
        "calibration_share": float(calibration_share),
        "apgr": _spread([r["apgr"] for r in runs]),
        "cpt_50": _spread([r["cpt_50"] for r in runs]),
        "cpt_80": _spread([r["cpt_80"] for r in runs]),
        "random": {"apgr": 0.5, "cpt_50": 0.5, "cpt_80": 0.8},
        "oracle": {
            key: float(np.mean([o[key] for o in oracles])) for key in ("apgr", "cpt_50", "cpt_80")
        },
        "points": [
            {
                "strong_share": x,
                "quality": float(np.mean([envelope_at(r["envelope"], x) for r in runs])),
            }
            for x in GRID
        ],
        "routellm": [dict(p) for p in published],
        "notes": notes,
    }


# ---- the shipped benchmarks ----------------------------------------------------------------------


def load_contaminated(paths: Iterable[str | Path]) -> set[str]:
    """The ``eval_prompt`` of every line of RouteLLM's ``contaminated_prompts.jsonl`` files,
    stripped.

    Raises:
        InvalidInput: a file cannot be read or a line is not a JSON object with a string
            ``eval_prompt`` (names file and line).
    """
    prompts: set[str] = set()
    for p in map(Path, paths):
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InvalidInput(f"cannot read {p}: {exc.strerror}", field="contaminated") from exc
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                prompt = json.loads(line)["eval_prompt"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InvalidInput(
                    f"{p} line {n}: not an object with 'eval_prompt'", field="contaminated"
                ) from exc
            if not isinstance(prompt, str):
                raise InvalidInput(
                    f"{p} line {n}: eval_prompt is not a string", field="contaminated"
                )
            prompts.add(prompt.strip())
    return prompts


def curve_items(
    path: str | Path,
    *,
    cheap_model: str,
    strong_model: str,
    contaminated: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[str, list[CurveItem], int]:
    """(benchmark name, items, items dropped as contaminated) from a held-out set with both
    models' recordings, scored by RouteLLM's conventions: an MT-Bench question (``mt_bench``:
    ids ``mt_bench/<question>/<turn>``) is one item scored by the mean judge score over its
    turns; any other set's item by its recorded ``correct`` flag (1.0 / 0.0). An item whose
    first user message (stripped) is in ``contaminated`` is dropped (for MT-Bench, the whole
    question).

    Raises:
        InvalidInput: the set cannot be loaded (names file and line), or an item lacks either
            model's score (``field="outputs"``, naming the item and model).
    """
    held = load_held_out(path)
    dropped = 0
    if held.name == "mt_bench":
        turns: dict[str, dict[str, list[float]]] = {}
        klass: dict[str, str] = {}
        first: dict[str, str] = {}
        for item in held.items:
            qid = item.id.rsplit("/", 1)[0]
            klass[qid] = item.task_type
            users = [m for m in item.messages if m.get("role") == "user"]
            first.setdefault(qid, text_of(users[0].get("content")).strip() if users else "")
            for model in (cheap_model, strong_model):
                out = item.outputs.get(model)
                if out is None or out.judge is None or out.judge.score is None:
                    raise InvalidInput(f"{item.id}: no judge score for {model}", field="outputs")
                turns.setdefault(qid, {}).setdefault(model, []).append(out.judge.score)
        questions: list[CurveItem] = []
        for qid, scores in turns.items():
            if first[qid] in contaminated:
                dropped += 1
                continue
            questions.append(
                CurveItem(
                    qid,
                    klass[qid],
                    float(np.mean(scores[cheap_model])),
                    float(np.mean(scores[strong_model])),
                )
            )
        return held.name, questions, dropped
    flags: list[CurveItem] = []
    for item in held.items:
        users = [m for m in item.messages if m.get("role") == "user"]
        if users and text_of(users[0].get("content")).strip() in contaminated:
            dropped += 1
            continue
        correct: list[float] = []
        for model in (cheap_model, strong_model):
            out = item.outputs.get(model)
            if out is None or out.correct is None:
                raise InvalidInput(
                    f"{item.id}: no recorded correctness for {model}", field="outputs"
                )
            correct.append(1.0 if out.correct else 0.0)
        flags.append(CurveItem(item.id, item.task_type, correct[0], correct[1]))
    return held.name, flags, dropped
