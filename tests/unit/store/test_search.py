"""SearchIndex on a real embedded LanceDB: exact ranking, cascade recall, filters, injection, FTS, hybrid, refresh."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from mmrag.models.encoder import maxsim
from mmrag.store import FinishedDocument, LanceStore
from mmrag.store import schema as S
from mmrag.store.search import Hit, SearchError, SearchFilters, SearchIndex, SearchQuery, fts_terms
from mmrag.store.snapshot import Snapshot

pytestmark = pytest.mark.unit
DIM = 8
E = np.eye(DIM, dtype=np.float32)


# ------------------------------------------------------------------------------------------------ helpers
def _item(
    collection: str,
    uri: str,
    index: int,
    mv: np.ndarray,
    *,
    modality: str = "page",
    page: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    text: str = "",
) -> dict:
    mv = np.asarray(mv, dtype=np.float32)
    pooled = mv.mean(0)
    pooled = pooled / (np.linalg.norm(pooled) or 1.0)
    return {
        "id": S.item_id(collection, uri, "h", modality, index),
        "collection": collection,
        "doc_id": S.doc_id(collection, uri),
        "source_uri": uri,
        "content_hash": "h",
        "modality": modality,
        "page": page if page is not None else (index + 1 if modality == "page" else None),
        "start_s": start_s,
        "end_s": end_s,
        "text": text,
        "text_source": "pdf" if text else None,  # as ingestion writes it: BM25 can see the item
        "multivector": mv.tolist(),
        "pooled": pooled.tolist(),
        "n_tokens": len(mv),
        "model_id": "m",
        "ingested_at": dt.datetime.now(dt.UTC),
        "visible": False,
    }


def _publish(store: LanceStore, items: list[dict], *, finish: bool = True) -> None:
    store.add_items(pa.Table.from_pylist(items, schema=S.items_schema(DIM)))
    if finish:
        docs = {(r["collection"], r["source_uri"]): 0 for r in items}
        for r in items:
            docs[(r["collection"], r["source_uri"])] += 1
        store.finish_documents([FinishedDocument(c, u, "h", "pdf", n, 0, "m") for (c, u), n in docs.items()])


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _f(collection: str = "c", **kw) -> SearchFilters:
    return SearchFilters(collection=collection, **kw)


@pytest.fixture
def store(tmp_path) -> LanceStore:
    s = LanceStore(str(tmp_path / "db"))
    s.ensure_tables(DIM)
    return s


# Five hand-made pages: query [e0, e1] scores A=2, C=sqrt(2), B=1, D=0, E=-1 (a negative best match stays negative).
HAND = {
    "A": np.stack([E[0], E[1]]),
    "B": np.stack([E[0], E[2]]),
    "C": _unit((E[0] + E[1])[None]),
    "D": np.stack([E[2], E[3]]),
    "E": -E[0][None],
}
HAND_SCORES = {"A": 2.0, "C": math.sqrt(2), "B": 1.0, "D": 0.0, "E": -1.0}


@pytest.fixture
def hand_store(store: LanceStore) -> tuple[LanceStore, dict[str, str]]:
    items = [_item("c", f"/{name}.pdf", 0, mv, text=f"page {name}") for name, mv in HAND.items()]
    _publish(store, items)
    return store, {name: it["id"] for name, it in zip(HAND, items, strict=True)}


# ------------------------------------------------------------------------------------------------ ranking
@pytest.mark.parametrize(
    ("token_store", "backend"), [("int8", "torch"), ("int8", "numpy"), ("float16", "torch"), ("none", "numpy")]
)
def test_exact_ranking_matches_hand_computed_maxsim(hand_store, token_store: str, backend: str) -> None:
    store, ids = hand_store
    # exact_k=1 forces the token stage to cut 5 candidates to 3 before the exact stage
    index = SearchIndex.from_store(store, {"exact_k": 1, "token_store": token_store, "backend": backend})
    hits = index.search_visual(np.stack([E[0], E[1]]), 3, filters=_f())
    assert [h.id for h in hits] == [ids["A"], ids["C"], ids["B"]]
    for h, name in zip(hits, "ACB", strict=True):
        assert h.score == pytest.approx(HAND_SCORES[name], abs=1e-5)
        assert h.stage_scores["maxsim"] == h.score
        assert "pooled" in h.stage_scores
        assert ("tokens" in h.stage_scores) == (token_store != "none")
        assert h.source_uri == f"/{name}.pdf" and h.page == 1 and h.modality == "page"
        assert h.text == f"page {name}"
    all_hits = index.search_visual(np.stack([E[0], E[1]]), 10, filters=_f())
    assert [h.score for h in all_hits] == pytest.approx([2.0, math.sqrt(2), 1.0, 0.0, -1.0], abs=1e-5)


def _clustered(n: int, seed: int) -> list[np.ndarray]:
    """Items around a few topic centres: 3-9 noisy tokens each, L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((6, DIM)))
    out = []
    for _ in range(n):
        concepts = _unit(centres[rng.integers(0, 6)] + 0.6 * rng.standard_normal((3, DIM)))
        toks = concepts[rng.integers(0, 3, int(rng.integers(3, 10)))] + 0.3 * rng.standard_normal((1, DIM))
        out.append(_unit(toks + 0.2 * rng.standard_normal(toks.shape)))
    return out


@pytest.mark.parametrize("token_threads", [1, 2])
def test_cascade_recall_equals_exhaustive_on_clustered_data(
    store: LanceStore, monkeypatch: pytest.MonkeyPatch, token_threads: int
) -> None:
    import mmrag.store.kernels as kernels

    monkeypatch.setattr(kernels, "TOKEN_BLOCK", 64)  # many blocks, scored by one or two threads
    monkeypatch.setattr(kernels, "POOLED_BLOCK", 48)  # the pooled stage's row blocks too
    mvs = _clustered(400, seed=1)
    items = [_item("c", f"/d{i // 10}.pdf", i % 10 + 10 * (i // 10), mv) for i, mv in enumerate(mvs)]
    _publish(store, items)
    index = SearchIndex.from_store(store, {"first_stage_k": 200, "exact_k": 20, "token_threads": token_threads})
    rng = np.random.default_rng(2)
    for _ in range(20):
        src = mvs[int(rng.integers(0, len(mvs)))]
        q = _unit(src[rng.integers(0, len(src), 4)] + 0.5 * rng.standard_normal((4, DIM)))
        exact = maxsim(q, mvs)
        truth = {items[i]["id"] for i in np.argsort(-exact)[:10]}
        hits = index.search_visual(q, 10, filters=_f())
        assert {h.id for h in hits} == truth
        assert [h.score for h in hits] == pytest.approx(sorted(exact, reverse=True)[:10], abs=1e-5)
    index.close()


@pytest.mark.parametrize(("backend", "threads"), [("torch", 1), ("torch", 2), ("numpy", 1)])
def test_float16_pooled_stage_scores_as_float32_does(
    monkeypatch: pytest.MonkeyPatch, backend: str, threads: int
) -> None:
    import mmrag.store.kernels as kernels

    monkeypatch.setattr(kernels, "POOLED_BLOCK", 37)  # blocks that do not divide the rows
    mvs = _clustered(300, seed=4)
    ids = [f"i{j}" for j in range(len(mvs))]
    cfg = {"backend": backend, "token_threads": threads}
    half = SearchIndex.from_arrays(ids, mvs, collection="c", config=cfg)
    full = SearchIndex.from_arrays(ids, mvs, collection="c", config={**cfg, "pooled_store": "float32"})
    assert half._snap.pooled.dtype == np.float16 and full._snap.pooled.dtype == np.float32
    assert half.memory_bytes()["pooled"] * 2 == full.memory_bytes()["pooled"]
    rng = np.random.default_rng(3)
    q = _unit(rng.standard_normal((5, DIM))).mean(axis=0).astype(np.float32)
    every, some = np.arange(300), np.arange(0, 300, 7)  # the whole matrix, and a filter's few rows
    for allowed in (every, some):
        got = half._scorer.pooled_scores(half._snap, q, allowed)
        want = full._snap.pooled[allowed] @ q
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() < 2e-3
        top_got = set(allowed[half._scorer.top_idx(got, 10)].tolist())
        assert len(top_got & set(allowed[np.argsort(-want)[:10]].tolist())) >= 9
    half.close()
    full.close()


def test_array_backed_index_needs_no_lancedb() -> None:
    index = SearchIndex.from_arrays([f"i{j}" for j in range(5)], list(HAND.values()), collection="c")
    hits = index.search_visual(np.stack([E[0], E[1]]), 2, filters=_f())
    assert [h.id for h in hits] == ["i0", "i2"]
    with pytest.raises(SearchError, match="LanceDB-backed"):
        index.search_text("page", 3, filters=_f())


# ------------------------------------------------------------------------------------------------ filters
@pytest.fixture
def mixed_store(store: LanceStore) -> LanceStore:
    q = E[0][None]
    _publish(
        store,
        [
            _item("c", "/a.pdf", 0, q, page=1, text="alpha report"),
            _item("c", "/a.pdf", 1, q, page=5, text="alpha report"),
            _item("c", "/o'brien.pdf", 0, q, page=2, text="alpha letter"),
            _item("c", "/pic.png", 0, q, modality="image", text="alpha picture"),
            _item("c", "/v.mp4", 0, q, modality="clip", start_s=0.0, end_s=10.0, text="alpha clip one"),
            _item("c", "/v.mp4", 1, q, modality="clip", start_s=10.0, end_s=20.0, text="alpha clip two"),
            _item("other", "/a.pdf", 0, q, page=1, text="alpha secret"),
        ],
    )
    store.refresh_text_index()
    return store


def _uris(hits: list[Hit]) -> list[tuple[str, int | None, float | None]]:
    return sorted((h.source_uri, h.page, h.start_s) for h in hits)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, {"/a.pdf", "/o'brien.pdf", "/pic.png", "/v.mp4"}),
        ({"modalities": ["image", "clip"]}, {"/pic.png", "/v.mp4"}),
        ({"source_uris": ["/o'brien.pdf"]}, {"/o'brien.pdf"}),
        ({"doc_ids": [S.doc_id("c", "/pic.png")]}, {"/pic.png"}),
        ({"page_min": 2}, {"/a.pdf", "/o'brien.pdf"}),
        ({"page_min": 1, "page_max": 1}, {"/a.pdf"}),
        ({"time_min_s": 12.0}, {"/v.mp4"}),
        ({"time_max_s": 5.0, "modalities": ["clip"]}, {"/v.mp4"}),
    ],
)
def test_filters_apply_to_visual_and_text_alike(mixed_store: LanceStore, filters: dict, expected: set[str]) -> None:
    index = SearchIndex.from_store(mixed_store)
    f = _f(**filters)
    visual = index.search_visual(E[0][None], 20, filters=f)
    text = index.search_text("alpha", 20, filters=f)
    assert {h.source_uri for h in visual} == expected
    assert _uris(visual) == _uris(text)
    assert all(h.collection == "c" for h in visual + text)


def test_time_range_keeps_overlapping_clips(mixed_store: LanceStore) -> None:
    index = SearchIndex.from_store(mixed_store)
    hits = index.search_visual(E[0][None], 20, filters=_f(time_min_s=9.0, time_max_s=11.0))
    assert sorted((h.start_s, h.end_s) for h in hits) == [(0.0, 10.0), (10.0, 20.0)]
    hits = index.search_visual(E[0][None], 20, filters=_f(time_min_s=15.0))
    assert [(h.start_s, h.end_s) for h in hits] == [(10.0, 20.0)]


def test_collections_are_isolated(mixed_store: LanceStore) -> None:
    index = SearchIndex.from_store(mixed_store)
    assert {h.collection for h in index.search_visual(E[0][None], 20, filters=_f("other"))} == {"other"}
    assert [h.text for h in index.search_text("secret", 5, filters=_f("c"))] == []
    assert [h.text for h in index.search_text("secret", 5, filters=_f("other"))] == ["alpha secret"]
    assert index.search_visual(E[0][None], 5, filters=_f("nobody")) == []


EVIL = ["x' OR '1'='1", "c' OR collection = 'other", "') OR 1=1 --", 'c") OR (1=1', "%", "' OR visible = false OR '"]


@pytest.mark.parametrize("evil", EVIL)
def test_filter_injection_returns_nothing_from_other_collections(mixed_store: LanceStore, evil: str) -> None:
    index = SearchIndex.from_store(mixed_store)
    with pytest.raises(ValidationError):
        SearchFilters(collection=evil)
    # even past validation the typed expressions quote everything: nothing leaks
    bypass = SearchFilters.model_construct(collection=evil)
    assert index.search_visual(E[0][None], 20, filters=bypass) == []
    assert index.search_text("alpha secret", 20, filters=bypass) == []
    for key in ("source_uris", "doc_ids"):
        f = _f(**{key: [evil]})
        assert index.search_visual(E[0][None], 20, filters=f) == []
        assert index.search_text("alpha secret", 20, filters=f) == []


def test_filters_are_validated() -> None:
    with pytest.raises(ValidationError):
        SearchFilters(collection="c", colection="typo")
    with pytest.raises(ValidationError):
        SearchFilters(collection="c", modalities=["video"])
    with pytest.raises(ValidationError, match="page_min"):
        SearchFilters(collection="c", page_min=5, page_max=2)
    with pytest.raises(ValidationError):
        SearchFilters(collection="c", time_min_s=float("nan"))
    with pytest.raises(ValidationError, match="surrogate"):
        SearchFilters(collection="c", source_uris=["\ud800"])
    with pytest.raises(ValidationError):
        SearchFilters(collection="c", doc_ids=[])


def test_bad_queries_are_clear_errors(hand_store) -> None:
    index = SearchIndex.from_store(hand_store[0])
    with pytest.raises(SearchError, match="4-dimensional"):
        index.search_visual(np.ones((2, 4), np.float32), 3, filters=_f())
    with pytest.raises(SearchError, match="NaN"):
        index.search_visual(np.full((2, DIM), np.nan, np.float32), 3, filters=_f())
    with pytest.raises(SearchError, match="n_tokens >= 1"):
        index.search_visual(np.zeros((0, DIM), np.float32), 3, filters=_f())
    with pytest.raises(SearchError, match="k must be"):
        index.search_visual(E[:2], 0, filters=_f())
    with pytest.raises(SearchError, match="first_stage_k"):
        index.search_visual(E[:2], 3, filters=_f(), first_stage_k=0)


# ------------------------------------------------------------------------------------------------ text + hybrid
@pytest.fixture
def text_store(store: LanceStore) -> tuple[LanceStore, dict[str, str]]:
    # visual ranking for query [e0]: A (1.0) > B (0.8) > C (0.6); text ranking for "kaplan meier": C > B
    items = [
        _item("c", "/a.pdf", 0, _unit(E[0][None]), text="unrelated words about cats"),
        _item("c", "/b.pdf", 0, _unit((0.8 * E[0] + 0.6 * E[1])[None]), text="kaplan curve"),
        _item("c", "/c.pdf", 0, _unit((0.6 * E[0] + 0.8 * E[1])[None]), text="kaplan meier estimator kaplan meier"),
    ]
    _publish(store, items)
    store.refresh_text_index()
    return store, {n: it["id"] for n, it in zip("ABC", items, strict=True)}


def test_text_search_ranks_by_bm25(text_store) -> None:
    store, ids = text_store
    index = SearchIndex.from_store(store)
    hits = index.search_text("Kaplan-Meier", 10, filters=_f())
    assert [h.id for h in hits] == [ids["C"], ids["B"]]
    assert hits[0].score > hits[1].score > 0
    assert hits[0].stage_scores == {"bm25": hits[0].score}
    assert hits[0].text.startswith("kaplan meier")


def test_hybrid_is_weighted_reciprocal_rank_fusion(text_store) -> None:
    store, ids = text_store
    index = SearchIndex.from_store(store, {"rrf_k": 60, "weights": {"visual": 0.7, "bm25": 0.3}})
    hits = index.search_hybrid(E[0][None], "kaplan meier", 3, filters=_f())
    # A: 0.7/61; B: 0.7/62 + 0.3/62; C: 0.7/63 + 0.3/61
    expected = {"A": 0.7 / 61, "B": 1.0 / 62, "C": 0.7 / 63 + 0.3 / 61}
    assert [h.id for h in hits] == [ids["B"], ids["C"], ids["A"]]
    for h, name in zip(hits, "BCA", strict=True):
        assert h.score == pytest.approx(expected[name])
        assert h.stage_scores["fused"] == pytest.approx(expected[name])
        assert "maxsim" in h.stage_scores
    assert "bm25" in hits[0].stage_scores and "bm25" not in hits[2].stage_scores
    only_text = index.search_hybrid(E[0][None], "kaplan meier", 3, filters=_f(), weights={"bm25": 1.0})
    assert [h.id for h in only_text][:2] == [ids["C"], ids["B"]]
    only_visual = index.search_hybrid(E[0][None], "kaplan meier", 3, filters=_f(), weights={"visual": 1.0, "bm25": 0.0})
    assert [h.id for h in only_visual] == [ids["A"], ids["B"], ids["C"]]
    # a query without words leaves the visual order
    assert [h.id for h in index.search_hybrid(E[0][None], "?!", 3, filters=_f())] == [ids["A"], ids["B"], ids["C"]]


def test_one_entry_point_dispatches_the_modes(text_store) -> None:
    store, _ = text_store
    index = SearchIndex.from_store(store, {"rrf_k": 60, "weights": {"visual": 0.7, "bm25": 0.3}})
    q = E[0][None]
    ids = lambda hits: [h.id for h in hits]  # noqa: E731
    assert ids(index.search("text", None, "kaplan meier", 3, filters=_f())) == ids(
        index.search_text("kaplan meier", 3, filters=_f())
    )
    assert ids(index.search("visual", q, "ignored", 3, filters=_f())) == ids(index.search_visual(q, 3, filters=_f()))
    assert ids(index.search("hybrid", q, "kaplan meier", 3, filters=_f())) == ids(
        index.search_hybrid(q, "kaplan meier", 3, filters=_f())
    )
    with pytest.raises(SearchError, match="multivector"):
        index.search("visual", None, "x", 3, filters=_f())
    with pytest.raises(SearchError, match="unknown search mode"):
        index.search("semantic", q, "x", 3, filters=_f())


def test_search_many_equals_one_at_a_time_with_one_store_take(text_store, monkeypatch) -> None:
    store, ids = text_store
    index = SearchIndex.from_store(store, {"rrf_k": 60, "weights": {"visual": 0.7, "bm25": 0.3}})
    queries = [
        SearchQuery("visual", E[0][None], "", 3, _f()),
        SearchQuery("hybrid", E[1][None], "kaplan meier", 2, _f()),
        SearchQuery("text", None, "kaplan", 3, _f()),
        SearchQuery("visual", None, "", 3, _f()),  # bad: no multivector
        SearchQuery("visual", E[0][None], "", 3, _f("other")),  # nothing in that collection
        SearchQuery("visual", np.full((1, DIM), np.nan, np.float32), "", 3, _f()),  # bad: NaN
        SearchQuery("hybrid", E[0][None], "cats", 3, _f(), weights={"visual": -1.0}),  # bad weight
    ]
    one = [
        index.search_visual(E[0][None], 3, filters=_f()),
        index.search_hybrid(E[1][None], "kaplan meier", 2, filters=_f()),
        index.search_text("kaplan", 3, filters=_f()),
    ]
    takes: list[int] = []
    real_take = Snapshot.fetch_rows

    def counting(self, rows):
        got = real_take(self, rows)
        takes.append(len(got))
        return got

    monkeypatch.setattr(Snapshot, "fetch_rows", counting)
    out = index.search_many(queries)
    assert len(takes) == 1 and takes[0] == 3  # the union of both visual stages' candidates, fetched once
    for got, want in zip(out[:3], one, strict=True):
        assert [(h.id, h.score, h.stage_scores) for h in got] == [(h.id, h.score, h.stage_scores) for h in want]
    assert [h.id for h in out[1]] == [ids["C"], ids["B"]]
    assert out[4] == []
    for bad, msg in zip(out[3:], ("multivector", None, "NaN", "weight of 'visual'"), strict=True):
        if msg is not None:
            assert isinstance(bad, SearchError) and msg in str(bad)
    assert index.search_many([]) == []


HOSTILE = [
    '"unclosed',
    '"kaplan meier"',
    "kaplan) OR (1=1",
    "AND OR NOT",
    "NOT",
    "*",
    "kap*",
    "text:kaplan",
    "kaplan~2^3",
    '+-&&||!(){}[]^"~*?:\\/',
    "'; DROP TABLE items; --",
    "",
    "   ",
    "\ud800 lone surrogate kaplan",
    "kaplan " * 5000,
    "x" * 100_000,
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_text_queries_do_not_raise(text_store, query: str) -> None:
    index = SearchIndex.from_store(text_store[0])
    hits = index.search_text(query, 5, filters=_f())
    assert all(h.collection == "c" for h in hits)
    index.search_hybrid(E[0][None], query, 5, filters=_f())


def test_fts_terms_keep_only_words() -> None:
    assert fts_terms('"Kaplan-Meier" (survival) AND  kaplan*') == ["kaplan", "meier", "survival", "and"]
    assert fts_terms("") == [] and fts_terms("?!*") == []
    assert len(fts_terms(" ".join(f"w{i}" for i in range(1000)), 64)) == 64


def test_missing_text_index_is_a_clear_error_and_hybrid_degrades(hand_store) -> None:
    store, ids = hand_store  # no refresh_text_index()
    index = SearchIndex.from_store(store)
    with pytest.raises(SearchError, match="refresh_text_index"):
        index.search_text("page", 3, filters=_f())
    hits = index.search_hybrid(np.stack([E[0], E[1]]), "page", 2, filters=_f())
    assert [h.id for h in hits] == [ids["A"], ids["C"]]


# ------------------------------------------------------------------------------------------------ refresh
def test_refresh_picks_up_published_rows_only(store: LanceStore) -> None:
    index = SearchIndex.from_store(store)
    assert len(index) == 0 and index.search_visual(E[:1], 3, filters=_f()) == []

    _publish(store, [_item("c", "/a.pdf", 0, E[:2])])
    assert index.search_visual(E[:1], 3, filters=_f()) == []  # not refreshed yet
    assert index.refresh() is True
    assert [h.source_uri for h in index.search_visual(E[:1], 3, filters=_f())] == ["/a.pdf"]
    assert index.refresh() is False  # nothing changed

    _publish(store, [_item("c", "/b.pdf", 0, E[[0]])], finish=False)  # still being written: invisible
    index.refresh()
    assert [h.source_uri for h in index.search_visual(E[:1], 3, filters=_f())] == ["/a.pdf"]

    store.finish_documents([FinishedDocument("c", "/b.pdf", "h", "pdf", 1, 0, "m")])
    _publish(store, [_item("c", "/c.pdf", 0, E[[3]])])
    assert index.refresh() is True
    hits = index.search_visual(E[:2], 5, filters=_f())
    assert [(h.source_uri, round(h.score, 5)) for h in hits] == [("/a.pdf", 2.0), ("/b.pdf", 1.0), ("/c.pdf", 0.0)]

    store.delete_document("c", "/a.pdf")
    index.refresh()
    assert [h.source_uri for h in index.search_visual(E[:2], 5, filters=_f())] == ["/b.pdf", "/c.pdf"]


def test_refresh_reuses_tokens_of_unchanged_items(store: LanceStore) -> None:
    mvs = _clustered(30, seed=3)
    _publish(store, [_item("c", "/a.pdf", i, mv) for i, mv in enumerate(mvs)])
    index = SearchIndex.from_store(store, {"exact_k": 5})
    before = index._snap
    _publish(store, [_item("c", "/b.pdf", 0, mvs[0])])
    index.refresh()
    after = index._snap
    for i, item_id in enumerate(before.ids):
        r0, r1 = before.id_row[item_id], after.id_row[item_id]
        a = before.tokens[before.tok_start[r0] : before.tok_start[r0] + before.tok_len[r0]]
        b = after.tokens[after.tok_start[r1] : after.tok_start[r1] + after.tok_len[r1]]
        np.testing.assert_array_equal(a, b, err_msg=f"item {i}")
    q = mvs[0][:2]
    hits = index.search_visual(q, 2, filters=_f())
    assert {h.source_uri for h in hits} == {"/a.pdf", "/b.pdf"}
    assert hits[0].score == pytest.approx(hits[1].score)


def test_index_opens_on_a_store_without_tables(tmp_path) -> None:
    store = LanceStore(str(tmp_path / "empty"))
    index = SearchIndex.from_store(store)
    assert len(index) == 0 and index.version is None
    assert index.search_text("x", 3, filters=_f()) == []
    store.ensure_tables(DIM)
    _publish(store, [_item("c", "/a.pdf", 0, E[:1])])
    assert index.refresh() is True and len(index) == 1
    assert index.memory_bytes()["tokens"] == DIM  # one int8 token


def test_audio_items_are_found_by_words_never_by_their_waveform_picture(store: LanceStore) -> None:
    """An audio item's stored picture is a drawn waveform: the visual channel leaves it out even when its tokens
    match the query exactly; its transcript finds it in the text channel."""
    q = E[0][None]
    _publish(
        store,
        [
            _item("c", "/talk.wav", 0, q, modality="audio", start_s=0.0, end_s=10.0, text="the spoken budget"),
            _item("c", "/a.pdf", 0, E[1][None], page=1, text="a page"),
        ],
    )
    store.refresh_text_index()
    index = SearchIndex.from_store(store)
    assert [h.source_uri for h in index.search_visual(q, 5, filters=_f())] == ["/a.pdf"]
    assert [h.modality for h in index.search_text("budget", 5, filters=_f())] == ["audio"]
