"""The dense text channel in RAM: exact max-over-windows, its first stage, filters, hybrid fusion with it."""

from __future__ import annotations

import numpy as np
import pytest

from mmrag.store.dense import TextVectors
from mmrag.store.search import SearchError, SearchFilters, SearchIndex

pytestmark = pytest.mark.unit

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _windows(rng: np.random.Generator, n: int) -> list[np.ndarray | None]:
    return [None if i % 7 == 3 else _unit(rng.normal(size=(rng.integers(1, 6), DIM))) for i in range(n)]


def test_max_over_windows_matches_brute_force_with_and_without_first_stage() -> None:
    rng = np.random.default_rng(0)
    wins = _windows(rng, 200)
    tv = TextVectors.build(len(wins), DIM, ((r, w, None) for r, w in enumerate(wins)))
    q = _unit(rng.normal(size=DIM))
    truth = np.array([-np.inf if w is None else float((w @ q).max()) for w in wins])
    want = np.argsort(-truth, kind="stable")[:10]
    rows, scores = tv.search(q, np.arange(200), 10, first_stage_k=200, exact_rows=1000)
    assert set(rows.tolist()) == set(want.tolist())
    assert np.allclose(scores, truth[rows], atol=0.02)  # int8 windows
    assert all(wins[r] is not None for r in rows)
    # a first stage keeping every row gives the same answer
    rows2, _ = tv.search(q, np.arange(200), 10, first_stage_k=200, exact_rows=5)
    assert set(rows2.tolist()) == set(want.tolist())
    # filters: only allowed rows come back
    allowed = np.arange(0, 200, 2)
    rows3, _ = tv.search(q, allowed, 10, first_stage_k=50, exact_rows=1000)
    assert set(rows3.tolist()) <= set(allowed.tolist())


def test_reuse_copies_known_rows() -> None:
    rng = np.random.default_rng(1)
    wins = _windows(rng, 20)
    old = TextVectors.build(20, DIM, ((r, w, None) for r, w in enumerate(wins)))
    new = TextVectors.build(20, DIM, iter(()), {r: r for r in range(20)}, old)
    assert np.array_equal(new.count, old.count) and np.array_equal(new.mean, old.mean)
    q = _unit(rng.normal(size=DIM))
    assert np.array_equal(
        new.search(q, np.arange(20), 5, first_stage_k=5, exact_rows=100)[0],
        old.search(q, np.arange(20), 5, first_stage_k=5, exact_rows=100)[0],
    )


def test_index_dense_mode_and_hybrid_weights() -> None:
    rng = np.random.default_rng(2)
    n = 30
    mvs = [_unit(rng.normal(size=(4, 8))) for _ in range(n)]
    wins = _windows(rng, n)
    ids = [f"i{i}" for i in range(n)]
    index = SearchIndex.from_arrays(ids, mvs, texts=[f"t{i}" for i in range(n)], text_vectors=wins)
    f = SearchFilters(collection="default")
    target = 5
    q = wins[target][0] + 0.01
    hits = index.search_dense(q, 3, filters=f)
    assert hits[0].id == "i5" and hits[0].stage_scores == {"dense": pytest.approx(hits[0].score)}
    assert hits[0].text == "t5"
    assert index.channels() == ["visual", "dense"]
    # dense alone through hybrid equals dense mode's order
    hy = index.search_hybrid(None, "", 3, filters=f, query_vec=q, weights={"dense": 1.0})
    assert [h.id for h in hy] == [h.id for h in hits]
    # visual weight needs the multivector
    with pytest.raises(SearchError, match="multivector"):
        index.search_hybrid(None, "", 3, filters=f, query_vec=q, weights={"dense": 0.5, "visual": 0.5})
    both = index.search_hybrid(mvs[7], "", 5, filters=f, query_vec=q, weights={"dense": 0.5, "visual": 0.5})
    rank_v = {h.id: r for r, h in enumerate(index.search_visual(mvs[7], 50, filters=f), start=1)}
    rank_d = {h.id: r for r, h in enumerate(index.search_dense(q, 50, filters=f), start=1)}
    for h in both:
        want = sum(0.5 / (60 + r[h.id]) for r in (rank_v, rank_d) if h.id in r)
        assert h.score == pytest.approx(want)
    assert [h.score for h in both] == sorted((h.score for h in both), reverse=True)
    with pytest.raises(SearchError, match="dimensions"):
        index.search_dense(np.ones(3, np.float32), 3, filters=f)
    with pytest.raises(SearchError, match="unknown channel"):
        index.search_hybrid(mvs[0], "", 3, filters=f, weights={"colbert": 1.0})
