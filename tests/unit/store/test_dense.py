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


def _store_with_text(tmp_path, n: int, collections: tuple[str, ...] = ("a", "b")):
    """A real LanceDB store whose ``n`` visible pages (split over ``collections``) carry dense text windows."""
    import datetime as dt

    import pyarrow as pa

    from mmrag.store import FinishedDocument, LanceStore
    from mmrag.store import schema as S

    store = LanceStore(str(tmp_path / "db"))
    store.ensure_tables(4, DIM)
    rng = np.random.default_rng(3)
    rows, wins = [], {}
    per = n // len(collections)
    for c in collections:
        uri = f"/{c}-{n}.pdf"
        for i in range(per):
            w = _unit(rng.normal(size=(int(rng.integers(1, 4)), DIM)))
            mv = rng.standard_normal((3, 4)).astype("float32")
            item = S.item_id(c, uri, "h", "page", i)
            wins[item] = w
            rows.append(
                {
                    "id": item, "collection": c, "doc_id": S.doc_id(c, uri), "source_uri": uri, "content_hash": "h",
                    "modality": "page", "page": i + 1, "text": f"page {i}", "multivector": mv.tolist(),
                    "pooled": mv.mean(0).tolist(), "n_tokens": 3, "model_id": "m",
                    "ingested_at": dt.datetime.now(dt.UTC), "visible": False,
                    "text_vectors": w.tolist(), "text_vector": _unit(w.mean(0)).tolist(), "text_model_id": "t",
                }
            )  # fmt: skip
    store.add_items(pa.Table.from_pylist(rows, schema=S.items_schema(4, DIM)))
    store.finish_documents([FinishedDocument(c, f"/{c}-{n}.pdf", "h", "pdf", per, 0, "m") for c in collections])
    return store, wins


def test_vector_index_is_built_when_large_and_serves_the_first_stage(tmp_path, monkeypatch) -> None:
    import mmrag.store.search as search_mod

    store, wins = _store_with_text(tmp_path, 600)
    assert store.refresh_vector_index(0) is None  # 0: never
    assert store.refresh_vector_index(10_000) is None  # too small
    assert store.refresh_vector_index(500) == "built"
    assert store.refresh_vector_index(500) is None  # up to date
    (ix,) = [i for i in store.indexes() if i["columns"] == ["text_vector"]]
    assert ix["indexed_rows"] == 600 and ix["unindexed_rows"] == 0
    calls = []

    def counting(*a, **kw):
        calls.append(a[2])
        return search_mod.__dict__["_real_ann"](*a, **kw)

    monkeypatch.setitem(search_mod.__dict__, "_real_ann", search_mod.ann_candidates)
    monkeypatch.setattr(search_mod, "ann_candidates", counting)
    # a first stage as large as a collection: the index must hand back all of it, so the answer is the exact one
    index = SearchIndex.from_store(store, {"dense_exact_rows": 10, "dense_first_stage_k": 300, "dense_ann": True})
    target = sorted(wins)[7]
    q = wins[target][0]
    for coll in ("a", "b"):
        hits = index.search_dense(q, 5, filters=SearchFilters(collection=coll))
        assert calls and "collection" in calls[-1]  # the ANN stage ran, with the filters as its prefilter
        assert all(h.collection == coll for h in hits) and len(hits) == 5
        want = sorted(
            (i for i in wins if index._snap.collection[index._snap.id_row[i]] == coll),
            key=lambda i: -float((wins[i] @ q).max()),
        )
        if coll == index._snap.collection[index._snap.id_row[target]]:
            assert hits[0].id == target  # its own window: the best match
        assert [h.id for h in hits] == want[:5]
    # a small first stage still finds the item whose own window is the query, with the index and without
    coll = index._snap.collection[index._snap.id_row[target]]
    small = SearchIndex.from_store(store, {"dense_exact_rows": 10, "dense_first_stage_k": 20, "dense_ann": True})
    assert small.search_dense(q, 1, filters=SearchFilters(collection=coll))[0].id == target
    plain = SearchIndex.from_store(store, {"dense_exact_rows": 10, "dense_first_stage_k": 20, "dense_ann": False})
    n_calls = len(calls)
    assert plain.search_dense(q, 1, filters=SearchFilters(collection=coll))[0].id == target
    assert len(calls) == n_calls  # dense_ann off: the in-RAM first stage


def test_vector_index_rebuilt_when_a_fifth_is_new(tmp_path) -> None:
    store, _ = _store_with_text(tmp_path, 600)
    assert store.refresh_vector_index(500) == "built"
    extra, _ = _store_with_text(tmp_path / "more", 200, ("c",))
    store.add_items(extra.table("items").to_arrow())
    assert store.refresh_vector_index(500) == "rebuilt"  # 200 of 800 (25%) not indexed
