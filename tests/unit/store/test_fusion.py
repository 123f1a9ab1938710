"""Fusion of channel rankings and blending of a reranker's order, on hand-written lists."""

from __future__ import annotations

import pytest

from mmrag.store.fusion import blend_rerank, fuse, fused_scores, order
from mmrag.store.hits import Hit

pytestmark = pytest.mark.unit


def test_weighted_rrf_by_hand() -> None:
    lists = {"bm25": [("a", 9.0), ("b", 5.0)], "dense": [("b", 0.9), ("c", 0.8)]}
    got = fused_scores(lists, {"bm25": 0.6, "dense": 0.4}, method="rrf", rrf_k=60)
    assert got["a"] == pytest.approx(0.6 / 61)
    assert got["b"] == pytest.approx(0.6 / 62 + 0.4 / 61)
    assert got["c"] == pytest.approx(0.4 / 62)
    assert order(got) == ["b", "a", "c"]


def test_score_fusion_normalises_each_channel() -> None:
    # BM25 scores are large, cosines small: min-max per channel makes them comparable
    lists = {"bm25": [("a", 30.0), ("b", 20.0), ("c", 10.0)], "dense": [("c", 0.9), ("b", 0.5), ("a", 0.1)]}
    got = fused_scores(lists, {"bm25": 0.5, "dense": 0.5}, method="score")
    assert got == pytest.approx({"a": 0.5, "b": 0.5 * 0.5 + 0.5 * 0.5, "c": 0.5})
    only_bm25 = fused_scores(lists, {"bm25": 1.0, "dense": 0.0}, method="score")
    assert order(only_bm25) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="unknown fusion method"):
        fused_scores(lists, {"bm25": 1.0}, method="max")


def test_zero_weight_channel_contributes_nothing_and_hits_keep_stage_scores() -> None:
    def h(i: str, s: float, st: str) -> Hit:
        return Hit(id=i, score=s, modality="page", collection="c", doc_id="d", source_uri="u", stage_scores={st: s})

    rankings = {"visual": [h("x", 5.0, "maxsim")], "bm25": [h("a", 3.0, "bm25"), h("x", 1.0, "bm25")]}
    hits = fuse(rankings, {"visual": 0.0, "bm25": 1.0}, 5)
    assert [x.id for x in hits] == ["a", "x"]
    assert "maxsim" not in hits[1].stage_scores and hits[1].stage_scores["fused"] == pytest.approx(1 / 62)
    both = fuse(rankings, {"visual": 0.5, "bm25": 0.5}, 5)
    assert both[0].id == "x" and {"maxsim", "bm25", "fused"} <= set(both[0].stage_scores)


def test_blend_rerank_weights() -> None:
    hits = [{"id": i, "score": 1.0, "stage_scores": {}} for i in "abcd"]
    scores = [0.1, 0.2, 0.3, 0.9]  # the reranker reverses the fused order
    assert [h["id"] for h in blend_rerank(hits, scores, 0.0, 4)] == ["a", "b", "c", "d"]
    assert [h["id"] for h in blend_rerank(hits, scores, 1.0, 4)] == ["d", "c", "b", "a"]
    assert blend_rerank(hits, scores, 1.0, 2)[0]["score"] == pytest.approx(0.9)
    half = blend_rerank(hits, scores, 0.25, 4)
    assert half[0]["id"] == "a" and all(h["stage_scores"]["rerank"] is not None for h in half)


def test_an_item_a_channel_cannot_see_is_not_held_against_it() -> None:
    # a silent clip: BM25 cannot see it, the dense channel ranks it first
    lists = {"bm25": [("p1", 9.0), ("p2", 5.0)], "dense": [("clip", 0.9), ("p1", 0.5), ("p2", 0.4)]}
    w = {"bm25": 0.6, "dense": 0.4}
    blind = fused_scores(lists, w, method="score")
    assert order(blind)[0] == "p1"  # without eligibility the clip can score at most 0.4
    fair = fused_scores(
        lists,
        w,
        method="score",
        eligible={"clip": ["visual", "dense"], "p1": ["bm25", "dense"], "p2": ["bm25", "dense"]},
    )
    assert fair["clip"] == pytest.approx(1.0) and order(fair)[0] == "clip"
    assert fair["p1"] == pytest.approx(blind["p1"])  # items every weighted channel can see are unchanged
