"""Fusion of the search channels' rankings (visual, BM25, dense text) into one, with per-channel weights.

Two methods, both over each channel's top ``depth`` list (an item a channel did not return gets nothing from it):

``rrf``    weighted reciprocal rank: ``sum_c w_c / (rrf_k + rank_c)`` (Cormack et al. 2009, weighted);
``score``  weighted sum of scores min-max normalised per channel over its list: ``sum_c w_c * (s_c - min_c) /
           (max_c - min_c)`` (the convex combination that Bruch et al. 2023 found beats RRF once its weight is
           tuned; scores on different scales, BM25 and cosine, become comparable).

Which method and which weights a collection uses is measured on its own probe queries (:mod:`mmrag.calibration`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from mmrag.store.hits import Hit

FusionMethod = Literal["rrf", "score"]


def fused_scores(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    weights: Mapping[str, float],
    *,
    method: FusionMethod = "rrf",
    rrf_k: int = 60,
    eligible: Mapping[str, Collection[str]] | None = None,
) -> dict[str, float]:
    """id -> fused score from per-channel ``[(id, score), ...]`` lists, each best first.

    ``eligible`` (id -> the channels that can rank that item at all): an item is scored over the channels that can
    see it, its sum divided by their share of the weight. A silent video clip has no text for BM25; without this,
    a clip at the top of the dense ranking would lose to every page that two channels return, and fusion would be
    worse than the dense channel alone on questions about videos."""
    out: dict[str, float] = {}
    seen: dict[str, set[str]] = {}
    for name, ranked in rankings.items():
        w = float(weights.get(name, 0.0))
        if w <= 0 or not ranked:
            continue
        for i, _ in ranked:
            seen.setdefault(i, set()).add(name)
        if method == "rrf":
            for rank, (i, _) in enumerate(ranked, start=1):
                out[i] = out.get(i, 0.0) + w / (rrf_k + rank)
        elif method == "score":
            vals = [s for _, s in ranked]
            lo, hi = min(vals), max(vals)
            span = hi - lo
            for i, s in ranked:
                out[i] = out.get(i, 0.0) + w * ((s - lo) / span if span > 0 else 1.0)
        else:
            raise ValueError(f"unknown fusion method {method!r}; use rrf or score")
    if eligible:
        total = sum(w for w in weights.values() if w > 0)
        for i in out:
            chans = eligible.get(i)
            if chans:
                chans = set(chans) | seen.get(i, set())  # a channel that ranked it can see it
                share = sum(w for c, w in weights.items() if w > 0 and c in chans)
                if 0 < share < total:
                    out[i] *= total / share
    return out


def order(scores: Mapping[str, float]) -> list[str]:
    """Ids by fused score, best first; ties broken by id so the order is deterministic."""
    return sorted(scores, key=lambda i: (-scores[i], i))


def fuse(
    rankings: Mapping[str, Sequence[Hit]],
    weights: Mapping[str, float],
    k: int,
    *,
    method: FusionMethod = "rrf",
    rrf_k: int = 60,
) -> list[Hit]:
    """The top ``k`` of the fused ranking; each hit keeps every channel's stage scores and gains ``fused``."""
    by_id: dict[str, Hit] = {}
    stages: dict[str, dict[str, float]] = {}
    lists: dict[str, list[tuple[str, float]]] = {}
    for name, hits in rankings.items():
        lists[name] = [(h.id, h.score) for h in hits]
        if float(weights.get(name, 0.0)) <= 0:
            continue
        for h in hits:
            by_id.setdefault(h.id, h)
            stages.setdefault(h.id, {}).update(h.stage_scores)
            if h.text and not by_id[h.id].text:
                by_id[h.id] = h
    eligible = {i: h.channels for i, h in by_id.items() if h.channels}
    scores = fused_scores(lists, weights, method=method, rrf_k=rrf_k, eligible=eligible)
    return [
        dataclasses.replace(by_id[i], score=scores[i], stage_scores={**stages[i], "fused": scores[i]})
        for i in order(scores)[:k]
    ]


def blend_rerank(
    hits: Sequence[dict[str, Any]], scores: Sequence[float], weight: float, k: int, *, name: str = "rerank"
) -> list[dict[str, Any]]:
    """Hit dicts in fused order re-ordered by a reranker's ``scores``, blended with the fused order.

    ``weight`` 1: the reranker's order alone (``score`` becomes its score); 0 < weight < 1: weighted RRF of the two
    orders (``score`` becomes the blend); 0: the fused order unchanged. Every hit keeps the reranker's score as the
    stage score ``name``.
    """
    out = [
        {**h, "stage_scores": {**(h.get("stage_scores") or {}), name: float(s)}}
        for h, s in zip(hits, scores, strict=True)
    ]
    if weight <= 0:
        return out[:k]
    by_rerank = sorted(range(len(out)), key=lambda i: (-float(scores[i]), i))
    if weight >= 1:
        return [{**out[i], "score": float(scores[i])} for i in by_rerank][:k]
    lists = {
        "fused": [(str(i), 0.0) for i in range(len(out))],
        "rerank": [(str(i), 0.0) for i in by_rerank],
    }
    blended = fused_scores(lists, {"fused": 1.0 - weight, "rerank": weight}, method="rrf", rrf_k=60)
    ranked = sorted(blended, key=lambda i: (-blended[i], int(i)))
    return [{**out[int(i)], "score": blended[i]} for i in ranked][:k]


__all__ = ["FusionMethod", "blend_rerank", "fuse", "fused_scores", "order"]
