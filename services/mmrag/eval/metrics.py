"""Ranking and answer metrics, on plain lists (no store, no model).

A ranking is judged first (:mod:`mmrag.eval.matching`): ``gains[i]`` is the relevance grade credited to the hit
at rank ``i + 1`` (0 for an irrelevant hit, or for a hit whose relevant unit an earlier hit already found). The
ideal ranking is the query's positive qrel grades, best first.

* nDCG@k: ``DCG = sum(gain_i / log2(i + 1))`` over ranks ``i = 1..k`` (linear gains: the grade itself, the
  TREC/BEIR convention of pytrec_eval), divided by the DCG of the ideal ranking cut at ``k``.
* recall@k: relevant units found in the top ``k`` over all relevant units of the query.
* MRR@k: ``1 / rank`` of the first relevant hit within the top ``k``, else 0.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = [
    "dcg",
    "latency_summary",
    "mean",
    "mrr_at_k",
    "ndcg_at_k",
    "normalize_answer",
    "percentile",
    "recall_at_k",
    "token_f1",
]


def dcg(gains: Sequence[float], k: int) -> float:
    """Discounted cumulative gain of the first ``k`` gains: ``sum(g_i / log2(i + 1))``, ranks from 1."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]) if g)


def ndcg_at_k(gains: Sequence[float], ideal: Iterable[float], k: int) -> float:
    """nDCG@k of judged ``gains`` against the ``ideal`` grades (any order; only positive ones count).

    Raises ``ValueError`` when there is no positive ideal grade: such a query has nothing to find and belongs out
    of the means, not at 0 or 1.
    """
    best = sorted((g for g in ideal if g > 0), reverse=True)
    if not best:
        raise ValueError("nDCG is undefined for a query without a relevant unit")
    return dcg(gains, k) / dcg(best, k)


def recall_at_k(gains: Sequence[float], n_relevant: int, k: int) -> float:
    """Fraction of the ``n_relevant`` relevant units found in the top ``k``.

    ``gains`` must give credit at most once per unit (the matcher does), so counting positive gains counts units.
    """
    if n_relevant <= 0:
        raise ValueError("recall is undefined for a query without a relevant unit")
    return sum(1 for g in gains[:k] if g > 0) / n_relevant


def mrr_at_k(gains: Sequence[float], k: int) -> float:
    """Reciprocal rank of the first relevant hit in the top ``k`` (0 when there is none)."""
    for i, g in enumerate(gains[:k]):
        if g > 0:
            return 1.0 / (i + 1)
    return 0.0


def mean(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the values that are not ``None`` (``None`` when there are none)."""
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_summary(ms: Sequence[float]) -> dict[str, float | int | None]:
    """``n``, ``p50``, ``p95`` and ``mean`` of latencies in milliseconds, rounded to 0.01 ms."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {"n": len(ms), "p50": r(percentile(ms, 50)), "p95": r(percentile(ms, 95)), "mean": r(mean(ms))}


# ------------------------------------------------------------------------------------------------ answers
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between a predicted and a reference answer after :func:`normalize_answer`.

    Two empty answers score 1, one empty answer scores 0.
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)
