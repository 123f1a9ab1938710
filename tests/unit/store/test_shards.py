"""The index split over shards (mmrag.store.shards): two shards merged equal one index, in every mode, on LanceDB."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from mmrag.store import FinishedDocument, LanceStore
from mmrag.store import schema as S
from mmrag.store.search import SearchFilters, SearchIndex, SearchQuery
from mmrag.store.shards import merge_hybrid, shard_of, top

pytestmark = pytest.mark.unit
DIM, TDIM = 8, 16
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
N_PER = 36  # pages per collection: the cascade keeps every one up to the exact stage (exact_k below)
CFG = {"exact_k": 64, "fusion_depth": 12}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> LanceStore:
    """Two collections of pages with multivectors, text (BM25) and dense text windows; some pages lack text, so
    channels see different items; a few pages share their vectors, so scores tie."""
    store = LanceStore(str(tmp_path_factory.mktemp("shards") / "db"))
    store.ensure_tables(DIM, TDIM)
    rng = np.random.default_rng(7)
    rows: list[dict] = []
    for c in ("a", "b"):
        uri = f"/{c}.pdf"
        for i in range(N_PER):
            mv = _unit(rng.normal(size=(int(rng.integers(2, 5)), DIM)))
            win = _unit(rng.normal(size=(int(rng.integers(1, 4)), TDIM)))
            if i % 9 == 8:  # the same vectors as the page before: equal scores, ordered by id
                mv, win = np.asarray(rows[-1]["multivector"], np.float32), np.asarray(rows[-1]["text_vectors"])
            words = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12))))
            has_text = i % 7 != 3
            rows.append(
                {
                    "id": S.item_id(c, uri, "h", "page", i), "collection": c, "doc_id": S.doc_id(c, uri),
                    "source_uri": uri, "content_hash": "h", "modality": "page", "page": i + 1,
                    "text": words if has_text else "", "text_source": "pdf" if has_text else None,
                    "multivector": mv.tolist(), "pooled": _unit(mv.mean(0)).tolist(), "n_tokens": len(mv),
                    "model_id": "m", "ingested_at": dt.datetime.now(dt.UTC), "visible": False,
                    "text_vectors": win.tolist() if has_text else [],
                    "text_vector": _unit(win.mean(0)).tolist() if has_text else None,
                    "text_model_id": "t" if has_text else None,
                }
            )  # fmt: skip
    store.add_items(pa.Table.from_pylist(rows, schema=S.items_schema(DIM, TDIM)))
    store.finish_documents([FinishedDocument(c, f"/{c}.pdf", "h", "pdf", N_PER, 0, "m") for c in ("a", "b")])
    store.refresh_text_index()
    return store


@pytest.fixture(scope="module")
def indexes(store: LanceStore) -> tuple[SearchIndex, list[SearchIndex]]:
    one = SearchIndex.from_store(store, CFG)
    shards = [SearchIndex.from_store(store, {**CFG, "shard_index": i, "shard_count": 2}) for i in range(2)]
    return one, shards


def _merged(shards: list[SearchIndex], sq: SearchQuery) -> list:
    """What the gateway does with the shards' answers (mmrag.serve.shards), on in-process indexes."""
    import dataclasses

    parts = []
    for ix in shards:
        got = ix.search_many([dataclasses.replace(sq, partial=True)])[0]
        assert not isinstance(got, Exception), got
        if isinstance(got, dict):
            parts.append({"rankings": got, "depths": ix.channel_depths(sq.k), "channels": ix.channels()})
        else:
            parts.append({"hits": got})
    if sq.mode != "hybrid":
        return top([p["hits"] for p in parts], sq.k)
    raw = sq.weights if sq.weights is not None else shards[0].config.weights
    return merge_hybrid(parts, raw, sq.k, method=sq.fusion or "rrf", rrf_k=sq.rrf_k or 60)


def test_shards_split_the_items_once(indexes) -> None:
    one, shards = indexes
    assert sorted(len(s) for s in shards) != [0, len(one)]  # both hold some
    ids = [set(s._snap.ids) for s in shards]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == set(one._snap.ids)
    # stable: the same id maps to the same shard in any batch, whatever its neighbours' lengths
    some = sorted(one._snap.ids)[:5]
    assert shard_of(some, 2).tolist() == [int(shard_of([i, "x" * 90], 2)[0]) for i in some]
    assert set(shard_of([f"id{i}" for i in range(1000)], 3).tolist()) == {0, 1, 2}


QUERIES = [
    ("visual", {}, {}),
    ("text", {}, {}),
    ("dense", {}, {}),
    ("visual", {"doc_ids": None, "page_min": 5, "page_max": 30}, {}),
    ("hybrid", {}, {"weights": {"bm25": 0.7, "dense": 0.3}, "fusion": "rrf"}),
    ("hybrid", {}, {"weights": {"bm25": 0.5, "dense": 0.2, "visual": 0.3}, "fusion": "rrf"}),
    ("hybrid", {}, {"weights": {"bm25": 0.6, "dense": 0.4}, "fusion": "score"}),
    ("hybrid", {"page_max": 20}, {"weights": {"visual": 1.0, "dense": 1.0}, "fusion": "score"}),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("collection", ["a", "b"])
@pytest.mark.parametrize(("mode", "filters", "extra"), QUERIES)
def test_two_shards_merged_equal_one_index(
    indexes, collection: str, mode: str, filters: dict, extra: dict, seed: int
) -> None:
    one, shards = indexes
    rng = np.random.default_rng(seed)
    qmv = _unit(rng.normal(size=(3, DIM)))
    qvec = _unit(rng.normal(size=TDIM))
    words = " ".join(rng.choice(WORDS, size=3))
    f = SearchFilters(collection=collection, **{k: v for k, v in filters.items() if v is not None})
    for k in (1, 5, 10):
        sq = SearchQuery(mode, qmv, words, k, f, query_vec=qvec, rrf_k=60, **extra)
        want = one.search_many([sq])[0]
        got = _merged(shards, sq)
        assert [_plain(h) for h in got] == [_plain(h) for h in want], (mode, k)
        # scores to float32 rounding: BLAS sums a row's dot product in an order that depends on the batch's shape
        assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-6)
        for g, w in zip(got, want, strict=True):
            assert g.stage_scores == pytest.approx(w.stage_scores, rel=1e-6)
        assert len(want) == k  # every mode found something to compare


def _plain(h) -> dict:
    plain = {k: v for k, v in h.to_dict().items() if k not in ("score", "stage_scores")}
    return plain | {"stages": sorted(h.stage_scores)}


def test_hybrid_weights_follow_the_channels_any_shard_serves() -> None:
    """A shard that cannot serve a channel leaves it to the others; none at all falls back to the visual ranking."""
    parts = [{"rankings": {}, "depths": {}, "channels": ["visual"]}, {"rankings": {}, "depths": {}, "channels": []}]
    assert merge_hybrid(parts, {"bm25": 1.0}, 5, method="rrf", rrf_k=60) is None
    parts[1]["channels"] = ["visual", "bm25"]
    assert merge_hybrid(parts, {"bm25": 1.0}, 5, method="rrf", rrf_k=60) == []


def test_refresh_keeps_each_shard_to_its_own_items(store: LanceStore, indexes) -> None:
    """An incremental refresh adds a new document's items to the shards they hash to, and drops deleted ones."""
    one, shards = indexes
    rng = np.random.default_rng(11)
    uri = "/c.pdf"
    rows = [
        {
            "id": S.item_id("c", uri, "h", "page", i), "collection": "c", "doc_id": S.doc_id("c", uri),
            "source_uri": uri, "content_hash": "h", "modality": "page", "page": i + 1, "text": "new words",
            "text_source": "pdf", "multivector": (mv := _unit(rng.normal(size=(2, DIM)))).tolist(),
            "pooled": _unit(mv.mean(0)).tolist(), "n_tokens": 2, "model_id": "m",
            "ingested_at": dt.datetime.now(dt.UTC), "visible": False,
            "text_vectors": _unit(rng.normal(size=(1, TDIM))).tolist(),
            "text_vector": _unit(rng.normal(size=TDIM)).tolist(), "text_model_id": "t",
        }
        for i in range(12)
    ]  # fmt: skip
    store.add_items(pa.Table.from_pylist(rows, schema=S.items_schema(DIM, TDIM)))
    store.finish_documents([FinishedDocument("c", uri, "h", "pdf", 12, 0, "m")])
    for ix in (one, *shards):
        assert ix.refresh()
        assert ix._snap.loaded["mode"] == "incremental"
    new = {r["id"] for r in rows}
    held = [set(s._snap.ids) & new for s in shards]
    assert held[0] and held[1] and not held[0] & held[1] and held[0] | held[1] == new
    assert set(shards[0]._snap.ids) | set(shards[1]._snap.ids) == set(one._snap.ids)
    sq = SearchQuery("visual", rows[3]["multivector"], "", 5, SearchFilters(collection="c"))
    assert [h.id for h in _merged(shards, sq)] == [h.id for h in one.search_many([sq])[0]]
    store.delete_document("c", uri)
    for ix in (one, *shards):
        ix.refresh()
    assert not (set(shards[0]._snap.ids) | set(shards[1]._snap.ids)) & new


class _Encoder:
    """Query vectors from the query's words (a stand-in for the tiny encoders: the real ones run in
    tests/integration/test_serve_app.py); counts its calls."""

    def __init__(self, dim: int) -> None:
        self.dim, self.calls = dim, 0

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        self.calls += len(queries)
        out = []
        for q in queries:
            rng = np.random.default_rng(sum(ord(ch) for ch in q))
            v = _unit(rng.normal(size=(3, self.dim)))
            out.append(v if self.dim == DIM else v[0])
        return out


class _Handle:
    """An in-process stand-in for a retriever's deployment handle (``h.method.remote(...)``): it calls what the
    replica's @serve.batch runs (``_run_batch``) and the encoders directly. Ray keeps one batch queue per decorated
    method in a process (a replica is a process), so replicas in one process would share it, and a queue made
    outside Serve leaves the deployment class unpicklable for later tests."""

    def __init__(self, replica) -> None:
        self.replica = replica
        self.search = self._remote(self._search)
        self.encode_query = self._remote(self._encode_query)

    @staticmethod
    def _remote(fn):
        class _M:
            remote = staticmethod(fn)

        return _M

    async def _search(self, query, *, k, collection, mode, filters=None, weights=None, fusion=None, **vectors):
        from mmrag.serve.retriever import _SearchArgs

        args = _SearchArgs(query, k, collection, mode, filters, weights, fusion, **vectors)
        got = self.replica._run_batch([args])[0]
        if isinstance(got, Exception):
            raise got
        return {**got, "timings": {**got["timings"], "in_retriever_ms": 0.0}}

    async def _encode_query(self, query, *, visual, dense):
        r = self.replica
        return (r.encoder.embed_queries([query])[0] if visual else None), (
            r.text_encoder.embed_queries([query])[0] if dense else None
        )


def test_gateway_fan_out_over_retriever_shards_equals_one_retriever(store: LanceStore, indexes, mmrag_home) -> None:
    """The retriever deployment's code (partial searches, vectors sent in) behind the gateway's fan-out
    (mmrag.serve.shards) answers as one retriever does, encoding each query once for all shards."""
    import asyncio

    from mmrag.config import load_config
    from mmrag.serve.retries import Retries
    from mmrag.serve.retriever import Retriever
    from mmrag.serve.shards import ShardedRetriever

    one_ix, shard_ix = indexes
    cfg = load_config("local-cpu", {"retriever": {"shards": 2}}).model_dump(mode="json")

    def replica(ix: SearchIndex, enc: _Encoder, tenc: _Encoder, shard: int | None):
        return Retriever.func_or_class(cfg, shard=shard, encoder=enc, index=ix, text_encoder=tenc, store=store)

    encs = [(_Encoder(DIM), _Encoder(TDIM)) for _ in range(3)]
    one = replica(one_ix, *encs[0], None)
    shards = [replica(ix, *encs[1 + i], i) for i, ix in enumerate(shard_ix)]
    fan = ShardedRetriever(
        [_Handle(s) for s in shards], Retries(5.0), default_mode="hybrid", default_weights={"bm25": 1.0}
    )
    cases = [
        ("visual", None, None),
        ("text", None, None),
        ("dense", None, None),
        ("hybrid", {"bm25": 0.5, "dense": 0.3, "visual": 0.2}, "rrf"),
        ("hybrid", {"dense": 0.6, "bm25": 0.4}, "score"),
    ]

    async def run() -> None:
        for mode, w, fusion in cases:
            for coll in ("a", "b"):
                kw = {"k": 6, "collection": coll, "mode": mode, "weights": w, "fusion": fusion}
                want = await _Handle(one).search.remote("gamma delta", **kw)
                calls = sum(e.calls + t.calls for e, t in encs[1:])
                got = await fan.search("gamma delta", **kw, rrf_k=60)
                assert [h["id"] for h in got["hits"]] == [h["id"] for h in want["hits"]], (mode, coll)
                assert [h["score"] for h in got["hits"]] == pytest.approx([h["score"] for h in want["hits"]], rel=1e-6)
                assert len(got["hits"]) == 6 and got["timings"]["shards"] == 2
                visual = mode == "visual" or (w or {}).get("visual", 0) > 0
                dense = mode == "dense" or (w or {}).get("dense", 0) > 0
                assert sum(e.calls + t.calls for e, t in encs[1:]) - calls == visual + dense  # once, not per shard

    try:
        asyncio.run(run())
    finally:
        for r in (one, *shards):
            r.refresher.stop()
