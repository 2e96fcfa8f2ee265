"""Model-free compressors and their registry.

A compressor chooses which units of a context (:mod:`router.compression.text`) to keep. It gets
the candidates (the units an earlier compressor of the pipeline left, less the ones that must
stay), the final question, and a budget in estimated tokens for what it keeps; the pipeline adds
the units that must stay (code blocks, and the extraction guard's fields) to what it returns.

- ``redundancy``: drops near-duplicate chunks (paragraphs; the units themselves when the context
  is one paragraph): cosine similarity of their word unigram+bigram count vectors above
  ``similarity`` (0.85) drops the later copy. Ignores the budget: it removes repeats only, so it
  is usually followed by a budgeted compressor.
- ``query``: query-aware sentence scoring with Okapi BM25 (Robertson & Zaragoza, "The
  Probabilistic Relevance Framework: BM25 and Beyond", 2009; ``rank_bm25.BM25Okapi``, k1 = 1.5,
  b = 0.75) of each unit against the question's content words, plus the BM25 score of the unit's
  paragraph (a retrieved passage) against the question, each scaled to its maximum: a sentence
  counts for what it says and for the passage it stands in. Words are matched by their
  Snowball stems (``layers`` finds ``layered``). The best units are kept in their
  original order up to the budget, each with its paragraph neighbours where they fit.
- ``tfidf``: the plain ranking, for scale: cosine of each unit's TF-IDF vector (smooth IDF,
  ``ln((1 + N) / (1 + df)) + 1``) with the question's; no passage score, no neighbours.
- ``structural``: the first 60% of the budget from the start, the last 40% from the end (first
  30% and last 20% of the text at ratio 0.5), every heading first.
- ``random``: units in a seeded random order up to the budget: the baseline of
  ``bench/compression.py``.

The registry (:data:`COMPRESSORS`, :func:`register`) is the seam for a learned compressor
(LLMLingua-2, Pan et al. 2024): none ships, because its models cannot be downloaded and tested
here.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from rank_bm25 import BM25Okapi

from router.compression.text import Segmented, query_terms, terms, words

DEFAULT_SIMILARITY = 0.85
"""Cosine above which two chunks are near-duplicates (the issue's suggested cut)."""

STRUCTURAL_HEAD_SHARE = 0.6
"""Share of a structural budget taken from the start (the rest from the end): 30% and 20% of
the text at ratio 0.5."""


@dataclass(frozen=True, slots=True)
class Options:
    """What a compressor may read besides the units: the near-duplicate cut (cosine), the seed
    of ``random``."""

    similarity: float = DEFAULT_SIMILARITY
    seed: int = 0


Select = Callable[[Segmented, Sequence[int], str, int, Options], list[int]]
"""(segmented text, candidate unit indices, question, budget in tokens, options) -> the kept
candidates."""

COMPRESSORS: dict[str, Select] = {}
"""Compressor name -> its selection function."""


def register(name: str, select: Select) -> None:
    """Add a compressor (a policy's ``compression`` list names it).

    Raises:
        ValueError: the name is taken.
    """
    if name in COMPRESSORS:
        raise ValueError(f"compressor '{name}' is already registered")
    COMPRESSORS[name] = select


def _fill(seg: Segmented, order: Sequence[int], budget: int) -> list[int]:
    """Greedy: take units in ``order`` while they fit ``budget`` (one that does not fit is
    skipped, smaller ones after it may still fit)."""
    kept: list[int] = []
    left = budget
    for i in order:
        t = seg.units[i].tokens
        if t <= left:
            kept.append(i)
            left -= t
    return kept


def _bigrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in pairwise(tokens)]


def redundancy(
    seg: Segmented, candidates: Sequence[int], question: str, budget: int, options: Options
) -> list[int]:
    """Drop later near-duplicate chunks (see the module doc)."""
    if not candidates:
        return []
    paragraphs = {seg.units[i].paragraph for i in candidates}
    groups: dict[int, list[int]] = {}
    for i in candidates:
        key = seg.units[i].paragraph if len(paragraphs) > 1 else i
        groups.setdefault(key, []).append(i)
    keys = list(groups)
    counts = [Counter(_bigrams(words(" ".join(seg.unit_text(i) for i in groups[k])))) for k in keys]
    vocab: dict[str, int] = {}
    for c in counts:
        for term in c:
            vocab.setdefault(term, len(vocab))
    matrix = np.zeros((len(keys), max(1, len(vocab))))
    for row, c in enumerate(counts):
        for term, n in c.items():
            matrix[row, vocab[term]] = n
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0
    unit = matrix / norms[:, None]
    sims = unit @ unit.T
    kept_rows: list[int] = []
    for row in range(len(keys)):
        if all(sims[row, other] <= options.similarity for other in kept_rows):
            kept_rows.append(row)
    return sorted(i for row in kept_rows for i in groups[keys[row]])


def _scaled(scores: Sequence[float]) -> list[float]:
    top = max(scores, default=0.0)
    return [max(0.0, s) / top if top > 0 else 0.0 for s in scores]


def query(
    seg: Segmented, candidates: Sequence[int], question: str, budget: int, options: Options
) -> list[int]:
    """Query-aware BM25 selection with the passage's score and neighbours (module doc)."""
    if not candidates:
        return []
    wanted = query_terms(question)
    docs = [terms(seg.unit_text(i)) or [""] for i in candidates]
    own = _scaled(list(BM25Okapi(docs).get_scores(wanted)))
    by_paragraph: dict[int, list[str]] = {}
    for i, doc in zip(candidates, docs, strict=True):
        by_paragraph.setdefault(seg.units[i].paragraph, []).extend(doc)
    paragraphs = list(by_paragraph)
    passage = (
        dict(
            zip(
                paragraphs,
                _scaled(list(BM25Okapi(list(by_paragraph.values())).get_scores(wanted))),
                strict=True,
            )
        )
        if len(paragraphs) > 1
        else dict.fromkeys(paragraphs, 0.0)
    )
    score = {i: own[pos] + passage[seg.units[i].paragraph] for pos, i in enumerate(candidates)}
    order = sorted(candidates, key=lambda i: (-score[i], i))
    where = {i: pos for pos, i in enumerate(candidates)}
    kept: set[int] = set()
    left = budget
    for i in order:
        if i in kept or seg.units[i].tokens > left:
            continue
        kept.add(i)
        left -= seg.units[i].tokens
        if score[i] <= 0:
            continue
        for step in (-1, 1):  # its neighbours in the same paragraph, where they fit
            pos = where[i] + step
            if 0 <= pos < len(candidates):
                j = candidates[pos]
                same = seg.units[j].paragraph == seg.units[i].paragraph
                if same and j not in kept and seg.units[j].tokens <= left:
                    kept.add(j)
                    left -= seg.units[j].tokens
    return sorted(kept)


def tfidf(
    seg: Segmented, candidates: Sequence[int], question: str, budget: int, options: Options
) -> list[int]:
    """Plain TF-IDF cosine ranking of units against the question (module doc)."""
    if not candidates:
        return []
    docs = [Counter(terms(seg.unit_text(i))) for i in candidates]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    n = len(docs)

    def idf(term: str) -> float:
        return math.log((1 + n) / (1 + df[term])) + 1

    q = Counter(query_terms(question))
    qv = {t: c * idf(t) for t, c in q.items()}
    qn = math.sqrt(sum(v * v for v in qv.values())) or 1.0
    scores: dict[int, float] = {}
    for i, d in zip(candidates, docs, strict=True):
        vec = {t: c * idf(t) for t, c in d.items()}
        dn = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        scores[i] = sum(vec.get(t, 0.0) * w for t, w in qv.items()) / (dn * qn)
    return sorted(_fill(seg, sorted(candidates, key=lambda i: (-scores[i], i)), budget))


def structural(
    seg: Segmented, candidates: Sequence[int], question: str, budget: int, options: Options
) -> list[int]:
    """Headings, then the start and the end of the text (module doc)."""
    headings = [i for i in candidates if seg.units[i].heading]
    kept = _fill(seg, headings, budget)
    left = budget - sum(seg.units[i].tokens for i in kept)
    rest = [i for i in candidates if i not in set(kept)]
    head_budget = int(left * STRUCTURAL_HEAD_SHARE)
    head: list[int] = []
    used = 0
    for i in rest:
        if used + seg.units[i].tokens > head_budget:
            break
        head.append(i)
        used += seg.units[i].tokens
    left -= used
    tail: list[int] = []
    for i in reversed(rest[len(head) :]):
        if seg.units[i].tokens > left:
            break
        tail.append(i)
        left -= seg.units[i].tokens
    return sorted(kept + head + tail)


def random_units(
    seg: Segmented, candidates: Sequence[int], question: str, budget: int, options: Options
) -> list[int]:
    """Units in a random order seeded by ``options.seed``, up to the budget."""
    order = list(candidates)
    random.Random(options.seed).shuffle(order)
    return sorted(_fill(seg, order, budget))


BUDGETED = frozenset({"query", "tfidf", "structural", "random"})
"""The compressors that fill a budget (``redundancy`` does not)."""

for _name, _select in (
    ("redundancy", redundancy),
    ("query", query),
    ("tfidf", tfidf),
    ("structural", structural),
    ("random", random_units),
):
    register(_name, _select)
