"""The metric maths on hand-written rankings, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from mmrag.eval import metrics as M

pytestmark = pytest.mark.unit


def test_dcg_and_ndcg_by_hand() -> None:
    # Ranking: relevant (grade 3) at rank 1, grade 2 at rank 3, grade 1 missing; ideal 3, 2, 1.
    gains = [3, 0, 2, 0, 0]
    # DCG = 3/log2(2) + 2/log2(4) = 3 + 1 = 4
    assert M.dcg(gains, 5) == pytest.approx(4.0)
    # IDCG@5 = 3/1 + 2/log2(3) + 1/2 = 3 + 1.261860 + 0.5 = 4.761860
    idcg = 3 + 2 / math.log2(3) + 0.5
    assert M.ndcg_at_k(gains, [1, 3, 2], 5) == pytest.approx(4.0 / idcg)
    assert M.ndcg_at_k(gains, [1, 3, 2], 5) == pytest.approx(0.84000, abs=1e-5)  # worked by hand: 4 / 4.76186


def test_ndcg_cut_at_k_and_perfect() -> None:
    assert M.ndcg_at_k([2, 1], [1, 2], 10) == pytest.approx(1.0)
    assert M.ndcg_at_k([1, 2], [1, 2], 10) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    # the one relevant unit at rank 6 counts at @10, not at @5
    gains = [0, 0, 0, 0, 0, 1]
    assert M.ndcg_at_k(gains, [1], 5) == 0.0
    assert M.ndcg_at_k(gains, [1], 10) == pytest.approx(1 / math.log2(7))
    # the ideal is cut at k as well: 12 relevant units, all 10 slots filled -> 1
    assert M.ndcg_at_k([1] * 10, [1] * 12, 10) == pytest.approx(1.0)
    assert M.ndcg_at_k([], [1], 10) == 0.0


def test_ndcg_ignores_zero_grades_and_rejects_no_relevant() -> None:
    assert M.ndcg_at_k([1], [0, 1, 0], 5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="without a relevant"):
        M.ndcg_at_k([0], [0], 5)


def test_recall_and_mrr() -> None:
    gains = [0, 1, 0, 0, 0, 0, 2, 0]
    assert M.recall_at_k(gains, 3, 5) == pytest.approx(1 / 3)
    assert M.recall_at_k(gains, 3, 10) == pytest.approx(2 / 3)
    assert M.mrr_at_k(gains, 10) == pytest.approx(0.5)
    assert M.mrr_at_k([0] * 10 + [1], 10) == 0.0
    with pytest.raises(ValueError):
        M.recall_at_k(gains, 0, 5)


def test_percentiles_and_latency_summary() -> None:
    assert M.percentile([], 50) is None
    assert M.percentile([5.0], 95) == 5.0
    xs = [float(x) for x in range(1, 101)]
    assert M.percentile(xs, 50) == pytest.approx(50.5)
    assert M.percentile(xs, 95) == pytest.approx(95.05)
    s = M.latency_summary([10.0, 20.0, 30.0, 40.0])
    assert s == {"n": 4, "p50": 25.0, "p95": 38.5, "mean": 25.0}
    assert M.mean([None, 1.0, 3.0]) == 2.0 and M.mean([None]) is None


def test_token_f1_squad_style() -> None:
    assert M.normalize_answer("The  Cat, sat!") == "cat sat"
    assert M.token_f1("The cat sat.", "a cat sat") == 1.0
    # pred: [cat, sat, on, mat]  ref: [cat, lay, on, mat]: 3 common, P = R = 3/4 -> F1 0.75
    assert M.token_f1("the cat sat on the mat", "a cat lay on a mat") == pytest.approx(0.75)
    assert M.token_f1("", "") == 1.0 and M.token_f1("x", "") == 0.0 and M.token_f1("dog", "cat") == 0.0
    # repeated tokens count only as often as they occur in both
    assert M.token_f1("yes yes yes", "yes") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
