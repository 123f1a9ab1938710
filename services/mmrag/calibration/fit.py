"""Choosing fusion weights, fusion method and reranker weight from measured rankings (pure functions).

Input: for every probe query, each channel's ranking (ids with scores, best first) and the one relevant id.

1. Each channel alone: nDCG@10 and MRR@10, and whether its MRR@10 beats a random ranking of the collection by
   ``chance_z`` standard errors (a random ranking's MRR@10 over N items has mean H/N, H = sum_{r<=10} 1/r). A channel
   that does not gets weight 0, whatever model it runs: a random-weight visual model is switched off because it
   measures like one, not because it is called "tiny".
2. Every subset of the remaining channels, every weight vector of the grid (step ``grid_step``, all weights of the
   subset positive) and both fusion methods are scored by mean nDCG@10. Single channels are part of the grid, so the
   best fusion is never worse than the best single channel **on the probe set**. Among subsets, a smaller one
   (fewer channels: less work per query) is preferred unless the larger adds at least ``min_gain``. Within the
   chosen subset and method, the weights used are the mean of every weighting the probes cannot tell from the best
   (paired difference within one standard error), unless that mean scores below the best single channel or more
   than a standard error below the best.
3. The reranker's order is blended with the fused order (weighted RRF of the two, weight 0 to 1); it is used only if
   its best weight adds at least ``min_gain`` nDCG@10 over not reranking.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmrag.store.fusion import fused_scores, order

Ranking = Sequence[tuple[str, float]]

CUTOFF = 10
RRF_K = 60


def ndcg_one(ranked: Sequence[str], relevant: str, k: int = CUTOFF) -> float:
    """nDCG@k with one relevant item (ideal DCG is 1)."""
    for r, i in enumerate(ranked[:k], start=1):
        if i == relevant:
            return 1.0 / math.log2(r + 1)
    return 0.0


def rr_one(ranked: Sequence[str], relevant: str, k: int = CUTOFF) -> float:
    for r, i in enumerate(ranked[:k], start=1):
        if i == relevant:
            return 1.0 / r
    return 0.0


def chance_mrr(n_items: int, n_queries: int, k: int = CUTOFF) -> tuple[float, float]:
    """Mean and standard error of MRR@k of a uniformly random ranking of ``n_items`` with one relevant item."""
    n = max(1, n_items)
    m = min(k, n)
    mean = sum(1.0 / r for r in range(1, m + 1)) / n
    second = sum(1.0 / r**2 for r in range(1, m + 1)) / n
    var = max(0.0, second - mean**2)
    return mean, math.sqrt(var / max(1, n_queries))


def weight_grid(channels: Sequence[str], step: float) -> list[dict[str, float]]:
    """Every weight vector over ``channels`` with all weights positive, multiples of ``step``, summing to 1."""
    units = round(1 / step)
    if len(channels) == 1:
        return [{channels[0]: 1.0}]
    out = []
    for parts in itertools.product(range(1, units), repeat=len(channels) - 1):
        last = units - sum(parts)
        if last >= 1:
            out.append({c: p / units for c, p in zip(channels, [*parts, last], strict=True)})
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def score_fusion(
    runs: Sequence[Mapping[str, Ranking]],
    relevant: Sequence[str],
    weights: Mapping[str, float],
    method: str,
    eligible: Sequence[Mapping[str, Sequence[str]]] | None = None,
) -> float:
    """Mean nDCG@10 of the fused rankings of every probe."""
    return _mean(per_query(runs, relevant, weights, method, eligible))


def fit_fusion(
    runs: Sequence[Mapping[str, Ranking]],
    relevant: Sequence[str],
    *,
    n_items: int,
    channels: Sequence[str],
    grid_step: float,
    chance_z: float,
    min_gain: float,
    eligible: Sequence[Mapping[str, Sequence[str]]] | None = None,
) -> dict[str, Any]:
    """Weights and method for the fused ranking, with the per-channel measurements behind them. ``eligible``: per
    probe, id -> the channels that can rank that item (see :func:`mmrag.store.fusion.fused_scores`)."""
    nq = len(relevant)
    mean0, se0 = chance_mrr(n_items, nq)
    per: dict[str, dict[str, Any]] = {}
    for c in channels:
        ranked = [[i for i, _ in r.get(c, [])] for r in runs]
        mrr = _mean([rr_one(x, rel) for x, rel in zip(ranked, relevant, strict=True)])
        per[c] = {
            "ndcg@10": round(_mean([ndcg_one(x, rel) for x, rel in zip(ranked, relevant, strict=True)]), 4),
            "mrr@10": round(mrr, 4),
            "chance_mrr@10": round(mean0, 4),
            "above_chance": bool(mrr > mean0 + chance_z * se0),
        }
    useful = [c for c in channels if per[c]["above_chance"]]
    best: dict[str, Any] | None = None
    by_size: dict[int, dict[str, Any]] = {}
    grid: dict[tuple[tuple[str, ...], str], list[tuple[dict[str, float], list[float]]]] = {}
    for size in range(1, len(useful) + 1):
        for subset in itertools.combinations(useful, size):
            for method in ("rrf", "score") if size > 1 else ("rrf",):
                for w in weight_grid(list(subset), grid_step):
                    per_q = per_query(runs, relevant, w, method, eligible)
                    grid.setdefault((subset, method), []).append((w, per_q))
                    s = _mean(per_q)
                    cur = by_size.get(size)
                    if cur is None or s > cur["ndcg@10"] + 1e-12:
                        by_size[size] = {"weights": w, "method": method, "ndcg@10": s, "subset": subset}
    for size in sorted(by_size):  # smallest subset first; a bigger one must earn its keep
        cand = by_size[size]
        if best is None or cand["ndcg@10"] >= best["ndcg@10"] + min_gain:
            best = cand
    single_best = max((per[c]["ndcg@10"] for c in channels), default=0.0)
    chosen = None
    if best is not None:
        chosen = _middle_of_the_best(grid[(best["subset"], best["method"])], best, runs, relevant, eligible)
        if chosen["ndcg@10"] < max(single_best, best["ndcg@10"] - chosen["se"]):
            chosen = {**best, "indistinguishable": 1, "se": chosen["se"]}  # the middle lost: keep the argmax
    return {
        "channels": per,
        "weights": {k: round(v, 4) for k, v in chosen["weights"].items()} if chosen else None,
        "fusion": chosen["method"] if chosen else None,
        "fused_ndcg@10": round(chosen["ndcg@10"], 4) if chosen else None,
        "best_single_ndcg@10": round(single_best, 4),
        "argmax": {"weights": best["weights"], "ndcg@10": round(best["ndcg@10"], 4)} if best else None,
        "indistinguishable_weightings": chosen["indistinguishable"] if chosen else 0,
        "by_channel_count": {
            str(k): {"weights": v["weights"], "method": v["method"], "ndcg@10": round(v["ndcg@10"], 4)}
            for k, v in by_size.items()
        },
    }


def per_query(
    runs: Sequence[Mapping[str, Ranking]],
    relevant: Sequence[str],
    weights: Mapping[str, float],
    method: str,
    eligible: Sequence[Mapping[str, Sequence[str]]] | None = None,
) -> list[float]:
    """nDCG@10 of every probe's fused ranking."""
    elig = eligible if eligible is not None else [None] * len(runs)
    return [
        ndcg_one(order(fused_scores(r, weights, method=method, rrf_k=RRF_K, eligible=e)), rel)  # type: ignore[arg-type]
        for r, rel, e in zip(runs, relevant, elig, strict=True)
    ]


def _middle_of_the_best(
    points: list[tuple[dict[str, float], list[float]]],
    best: dict[str, Any],
    runs: Sequence[Mapping[str, Ranking]],
    relevant: Sequence[str],
    eligible: Sequence[Mapping[str, Sequence[str]]] | None = None,
) -> dict[str, Any]:
    """The mean of the weightings the probes cannot tell from the best one, scored.

    A weighting is indistinguishable from the best when its mean paired nDCG@10 difference is within one standard
    error of that difference. Probe queries only resemble real questions, so the argmax of a flat optimum is partly
    noise; the middle of the near-best region moves less from one probe sample to the next."""
    top = next(q for w, q in points if w == best["weights"])
    n = len(top)
    keep: list[dict[str, float]] = []
    se_best = 0.0
    for w, q in points:
        d = [a - b for a, b in zip(q, top, strict=True)]
        m = _mean(d)
        sd = math.sqrt(sum((x - m) ** 2 for x in d) / max(1, n - 1))
        se = sd / math.sqrt(max(1, n))
        se_best = max(se_best, se)
        if m >= -se:
            keep.append(w)
    names = list(best["weights"])
    mid = {c: _mean([w[c] for w in keep]) for c in names}
    total = sum(mid.values())
    mid = {c: v / total for c, v in mid.items()}
    score = _mean(per_query(runs, relevant, mid, best["method"], eligible))
    return {"weights": mid, "method": best["method"], "ndcg@10": score, "indistinguishable": len(keep), "se": se_best}


def blend(fused: Sequence[str], reranked: Sequence[str], weight: float) -> list[str]:
    """The fused order blended with the reranker's: weighted RRF of the two (weight 1 = the reranker's order)."""
    if weight <= 0:
        return list(fused)
    lists = {"fused": [(i, 0.0) for i in fused], "rerank": [(i, 0.0) for i in reranked]}
    return order(fused_scores(lists, {"fused": 1.0 - weight, "rerank": weight}, method="rrf", rrf_k=RRF_K))


def fit_rerank(
    fused: Sequence[Sequence[str]],
    reranked: Sequence[Sequence[str]],
    relevant: Sequence[str],
    *,
    min_gain: float,
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> dict[str, Any]:
    """The reranker weight that maximises nDCG@10, or 0 if none adds ``min_gain`` over not reranking."""
    scores = {
        w: _mean([ndcg_one(blend(f, r, w), rel) for f, r, rel in zip(fused, reranked, relevant, strict=True)])
        for w in weights
    }
    base = scores.get(0.0, 0.0)
    best_w = max(weights, key=lambda w: (scores[w], -w))
    chosen = best_w if scores[best_w] >= base + min_gain else 0.0
    return {
        "weight": chosen,
        "ndcg@10_without": round(base, 4),
        "ndcg@10_by_weight": {f"{w:g}": round(s, 4) for w, s in scores.items()},
        "probes": len(relevant),
    }


__all__ = ["blend", "chance_mrr", "fit_fusion", "fit_rerank", "ndcg_one", "rr_one", "weight_grid"]
