"""Calibration maths on hand-made rankings: chance level, weight search, reranker decision, probe drawing."""

from __future__ import annotations

import random
import re

import pytest

from mmrag.calibration import fit as F
from mmrag.calibration.probes import content_words, probe_from_text, sample_probes

pytestmark = pytest.mark.unit


def test_chance_mrr_by_hand() -> None:
    mean, se = F.chance_mrr(4, 1)
    assert mean == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert se == pytest.approx(((1 + 1 / 4 + 1 / 9 + 1 / 16) / 4 - mean**2) ** 0.5)
    assert F.chance_mrr(1000, 100)[0] == pytest.approx(sum(1 / r for r in range(1, 11)) / 1000)


def test_weight_grid_covers_the_simplex_with_positive_weights() -> None:
    g = F.weight_grid(["a", "b"], 0.25)
    assert g == [{"a": 0.25, "b": 0.75}, {"a": 0.5, "b": 0.5}, {"a": 0.75, "b": 0.25}]
    assert len(F.weight_grid(["a", "b", "c"], 0.1)) == 36  # 9 choose 2
    assert F.weight_grid(["a"], 0.1) == [{"a": 1.0}]


def _runs(n: int, seed: int, good: dict[str, float]) -> tuple[list[dict[str, list]], list[str]]:
    """n queries over 100 items; channel c puts the relevant item at rank 1 with probability good[c], else nowhere
    in its top 10 (its list is noise)."""
    rng = random.Random(seed)
    runs, rel = [], []
    for q in range(n):
        target = f"i{q % 100}"
        per = {}
        for c, p in good.items():
            noise = [f"i{x}" for x in rng.sample(range(100), 20) if f"i{x}" != target][:15]
            ranked = [target, *noise] if rng.random() < p else [*noise[:12], target, *noise[12:]]
            per[c] = [(i, 1.0 / (r + 1)) for r, i in enumerate(ranked)]
        runs.append(per)
        rel.append(target)
    return runs, rel


def test_a_noise_channel_gets_weight_zero_and_complementary_channels_are_fused() -> None:
    runs, rel = _runs(200, 0, {"bm25": 0.7, "dense": 0.5, "visual": 0.0})
    got = F.fit_fusion(
        runs, rel, n_items=100, channels=["visual", "bm25", "dense"], grid_step=0.1, chance_z=3, min_gain=0.005
    )
    assert got["channels"]["visual"]["above_chance"] is False
    assert got["channels"]["bm25"]["above_chance"] and got["channels"]["dense"]["above_chance"]
    assert "visual" not in got["weights"]
    assert set(got["weights"]) == {"bm25", "dense"}  # independent hits: fusing both finds more
    assert got["fused_ndcg@10"] >= got["best_single_ndcg@10"]


def test_fused_is_never_below_the_best_single_channel_on_the_probes() -> None:
    for seed in range(5):
        runs, rel = _runs(60, seed, {"bm25": 0.9, "dense": 0.2})
        got = F.fit_fusion(runs, rel, n_items=100, channels=["bm25", "dense"], grid_step=0.1, chance_z=3, min_gain=0)
        assert got["fused_ndcg@10"] >= got["best_single_ndcg@10"] - 1e-9


def test_reranker_that_hurts_is_skipped_and_one_that_helps_is_used() -> None:
    fused = [[f"i{j}" for j in range(10)] for _ in range(50)]
    rel = ["i3"] * 50
    worse = [list(reversed(f)) for f in fused]  # pushes i3 down to rank 7
    better = [["i3", *[x for x in f if x != "i3"]] for f in fused]
    assert F.fit_rerank(fused, worse, rel, min_gain=0.005)["weight"] == 0.0
    assert F.fit_rerank(fused, better, rel, min_gain=0.005)["weight"] > 0


def test_probes_describe_the_item_without_copying_its_words_in_order() -> None:
    rng = random.Random(0)
    text = " ".join(
        f"The permutation test compares statistic {i} against resampled labels; conditional inference "
        f"uses the permutation distribution of the statistic given covariate {i}."
        for i in range(8)
    )
    words = text.split()
    for _ in range(30):
        q = probe_from_text(text, rng)
        assert q is not None
        terms = q.split()
        assert 3 <= len(terms) <= 6 and len(set(terms)) == len(terms)
        assert all(t in set(content_words(text)) for t in terms)  # every term is the item's own word
        # never a run of the item's words in their order
        joined = " ".join(w.lower().strip(".,;") for w in words)
        assert " ".join(terms) not in joined or len(terms) < 2
    assert probe_from_text("too short to use", rng) is None


def test_sample_probes_round_robin_over_documents_and_deterministic() -> None:
    body = "alpha beta gamma delta epsilon zeta theta iota kappa lambda " * 8
    items = [{"id": f"{d}-{i}", "doc_id": d, "text": body} for d in "abc" for i in range(10)]
    items.append({"id": "x", "doc_id": "d", "text": None})
    p1 = sample_probes(items, 6, seed=1)
    assert [p.doc_id for p in p1].count("a") == 2 and len({p.doc_id for p in p1}) == 3
    assert p1 == sample_probes(items, 6, seed=1)
    assert all(re.fullmatch(r"[a-z ]+", p.query) for p in p1)
