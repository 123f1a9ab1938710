"""Rerankers: exact masked MaxSim in torch, the cross-encoder path on the tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from mmrag.models.encoder import maxsim
from mmrag.models.rerankers import CrossEncoderReranker, MaxSimReranker, maxsim_torch

pytestmark = pytest.mark.unit


def test_maxsim_torch_matches_exact_numpy_and_ignores_padding() -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    docs = [rng.standard_normal((n, 8)).astype(np.float32) for n in (3, 17, 1)]
    # all-negative similarities: zero padding would win over every real token
    docs.append(-np.abs(q[:2]) * 0 - q[:2])
    got = maxsim_torch(q, docs)
    np.testing.assert_allclose(got, maxsim(q, docs), rtol=1e-5, atol=1e-5)
    hand = sum(max(float(qt @ dt) for dt in docs[2]) for qt in q)
    assert got[2] == pytest.approx(hand, rel=1e-5)


def test_maxsim_reranker_orders_by_score_and_marks_missing() -> None:
    q = np.eye(2, dtype=np.float32)
    store = {"a": np.array([[1, 0]], np.float32), "b": np.array([[1, 0], [0, 1]], np.float32)}
    rr = MaxSimReranker(lambda ids: {i: store[i] for i in ids if i in store})
    scores = rr.score("q", q, [{"id": "a"}, {"id": "b"}, {"id": "gone"}])
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(2.0)
    assert scores[2] == -np.inf
    with pytest.raises(ValueError, match="multivector"):
        rr.score("q", None, [{"id": "a"}])


def test_maxsim_reranker_reuses_the_retrievers_exact_scores() -> None:
    q = np.eye(2, dtype=np.float32)
    store = {"a": np.array([[1, 0]], np.float32), "b": np.array([[1, 0], [0, 1]], np.float32)}
    fetched: list[list[str]] = []

    def fetch(ids: list[str]) -> dict[str, np.ndarray]:
        fetched.append(list(ids))
        return {i: store[i] for i in ids if i in store}

    rr = MaxSimReranker(fetch)
    cands = [{"id": "a", "stage_scores": {"maxsim": 1.0}}, {"id": "b", "stage_scores": {"bm25": 3.0}}]
    scores = rr.score("q", q, cands)
    assert fetched == [["b"]], "only the text hit without an exact score is fetched"
    assert scores.tolist() == pytest.approx([1.0, 2.0])
    assert rr.score("q", q, cands[:1]).tolist() == [1.0] and len(fetched) == 1
    nan = [{"id": "a", "stage_scores": {"maxsim": float("nan")}}]
    assert rr.score("q", q, nan).tolist() == pytest.approx([1.0]) and fetched[-1] == ["a"]


def test_cross_encoder_scores_text_candidates(tiny_dir) -> None:
    rr = CrossEncoderReranker.from_pretrained(str(tiny_dir / "cross-encoder"))
    cands = [{"id": "1", "text": "a permutation test"}, {"id": "2", "text": ""}, {"id": "3", "text": "survival"}]
    scores = rr.score("what is a permutation test", None, cands)
    assert np.isfinite(scores[[0, 2]]).all()
    assert scores[1] == -np.inf  # no text, nothing to judge
    assert scores[0] != scores[2]
