"""Incremental refresh of the search index: the snapshot built from the old one plus the changed rows equals a full
load (same items, same data per item, same hits in every mode) after appends, publishes, deletes, replacements and
compaction, and a refresh in progress never shows a search a half-built snapshot; a new replica loads the items' int8
token copies (mmrag.store.tokens), and a store made before them works until optimize fills them in."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pyarrow as pa
import pytest

from mmrag.store import FinishedDocument, LanceStore
from mmrag.store import schema as S
from mmrag.store import tokens as T
from mmrag.store.arena import Arena, on_disk
from mmrag.store.cascade import make_room, quantise
from mmrag.store.search import SearchFilters, SearchIndex
from mmrag.store.search_config import SearchIndexConfig
from mmrag.store.snapshot import Codes, Snapshot
from mmrag.store.snapshot_load import load_snapshot

pytestmark = pytest.mark.unit
DIM, TDIM = 8, 4
WORDS = ["kaplan", "meier", "survival", "hazard", "cox", "censoring", "estimator", "curve"]


# ------------------------------------------------------------------------------------------------ helpers
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _doc(uri: str, n: int, seed: int, content_hash: str = "h", collection: str = "c") -> list[dict]:
    """``n`` pages of one document with random multivectors, text and text windows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        mv = _unit(rng.standard_normal((int(rng.integers(2, 6)), DIM)))
        pooled = _unit(mv.mean(0))
        wins = _unit(rng.standard_normal((int(rng.integers(1, 4)), TDIM)))
        text = " ".join(rng.choice(WORDS, 6))
        rows.append(
            {
                "id": S.item_id(collection, uri, content_hash, "page", i),
                "collection": collection,
                "doc_id": S.doc_id(collection, uri),
                "source_uri": uri,
                "content_hash": content_hash,
                "modality": "page",
                "page": i + 1,
                "text": text,
                "text_source": "pdf",
                "multivector": mv.tolist(),
                "pooled": pooled.tolist(),
                "n_tokens": len(mv),
                "model_id": "m",
                "ingested_at": dt.datetime.now(dt.UTC),
                "visible": False,
                "context": "",
                "text_vectors": wins.tolist(),
                S.TEXT_VECTOR: _unit(wins.mean(0)).tolist(),
                "text_model_id": "t",
            }
        )
    return rows


def _write(store: LanceStore, rows: list[dict], *, finish: bool = True) -> None:
    store.add_items(pa.Table.from_pylist(rows, schema=S.items_schema(DIM, TDIM)))
    if finish:
        r = rows[0]
        store.finish_documents(
            [FinishedDocument(r["collection"], r["source_uri"], r["content_hash"], "pdf", 1, 0, "m")]
        )


@pytest.fixture
def store(tmp_path) -> LanceStore:
    s = LanceStore(str(tmp_path / "db"))
    s.ensure_tables(DIM, TDIM)
    _write(s, _doc("/a.pdf", 12, seed=1))
    _write(s, _doc("/b.pdf", 9, seed=2))
    s.refresh_text_index()
    return s


def _per_item(snap: Snapshot) -> dict[str, tuple]:
    """Everything the snapshot holds about each item, keyed by id (row order and arena layout aside)."""
    out = {}
    for r, i in enumerate(snap.ids):
        t0, n = int(snap.tok_start[r]), int(snap.tok_len[r])
        toks = snap.tokens[t0 : t0 + n].tobytes() if snap.tokens is not None else b""
        scales = snap.tok_scale[t0 : t0 + n].tobytes() if snap.tok_scale is not None else b""
        text = ()
        if snap.text is not None:
            w0, c = int(snap.text.start[r]), int(snap.text.count[r])
            text = (snap.text.chunks[w0 : w0 + c].tobytes(), snap.text.scale[w0 : w0 + c].tobytes(),
                    snap.text.mean[r].tobytes())  # fmt: skip
        meta = (snap.collection[r], snap.modality[r], snap.doc_id[r], snap.source_uri[r])
        nums = (snap.page[r], snap.start_s[r], snap.end_s[r])
        out[i] = (meta, np.asarray(nums).tobytes(), snap.pooled[r].tobytes(), n, toks, scales, text,
                  bool(snap.has_text[r]), int(snap.row_ids[r]))  # fmt: skip
    return out


QUERIES = [(seed, " ".join(np.random.default_rng(seed).choice(WORDS, 2))) for seed in range(5)]


def _hits(index: SearchIndex, **filters) -> list:
    out = []
    f = SearchFilters(collection="c", **filters)
    for seed, text in QUERIES:
        rng = np.random.default_rng(100 + seed)
        q = _unit(rng.standard_normal((3, DIM)))
        qv = _unit(rng.standard_normal(TDIM))
        for mode in ("visual", "text", "dense", "hybrid"):
            k = 100 if mode in ("text", "hybrid") else 6  # every match: BM25 ties at the k-th place are LanceDB's
            hits = index.search(mode, q, text, k, filters=f, query_vec=qv)
            out.append([(mode, h.id, round(h.score, 5), h.page, h.source_uri, h.text, h.channels) for h in hits])
    return out


def _assert_same_as_full(index: SearchIndex, store: LanceStore, mode: str = "incremental") -> None:
    snap = index._snap
    assert snap.loaded["mode"] == mode, snap.loaded
    full = SearchIndex.from_store(store, index.config)
    assert full._snap.version == snap.version
    assert snap.ids == full._snap.ids  # the same rows in the same order as a full load
    assert _per_item(snap) == _per_item(full._snap)
    assert _hits(index) == _hits(full)
    assert _hits(index, page_max=3) == _hits(full, page_max=3)
    assert index.channels() == full.channels()


# ------------------------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("token_store", ["int8", "float16", "none"])
def test_incremental_refresh_equals_a_full_load(store: LanceStore, token_store: str) -> None:
    index = SearchIndex.from_store(store, {"token_store": token_store, "exact_k": 3, "first_stage_k": 8})
    assert index._snap.loaded["mode"] == "full"

    _write(store, _doc("/c.pdf", 7, seed=3), finish=False)  # appended, still invisible
    assert index.refresh() is True
    assert len(index) == 21
    _assert_same_as_full(index, store)

    store.finish_documents([FinishedDocument("c", "/c.pdf", "h", "pdf", 7, 0, "m")])  # published
    index.refresh()
    assert index._snap.loaded == {"mode": "incremental", "rows": 28, "added": 7, "removed": 0}
    _assert_same_as_full(index, store)

    store.delete_document("c", "/a.pdf")
    index.refresh()
    assert index._snap.loaded == {"mode": "incremental", "rows": 16, "added": 0, "removed": 12}
    _assert_same_as_full(index, store)

    _write(store, _doc("/b.pdf", 4, seed=5, content_hash="h2"))  # a new version of b replaces its 9 pages
    _write(store, _doc("/d.pdf", 3, seed=6, collection="other"))
    index.refresh()
    assert index._snap.loaded == {"mode": "incremental", "rows": 14, "added": 7, "removed": 9}
    _assert_same_as_full(index, store)


def test_disk_token_tier_holds_what_the_ram_tier_holds_through_a_refresh(store: LanceStore, tmp_path) -> None:
    cfg = {"exact_k": 3, "first_stage_k": 8}
    disk = SearchIndex.from_store(store, {**cfg, "token_tier": "disk", "token_dir": str(tmp_path / "tok")})
    ram = SearchIndex.from_store(store, cfg)
    # memory-mapped, unlinked files: not counted in the index's RAM, nothing left in the directory
    assert on_disk(disk._snap.tokens) and on_disk(disk._snap.tok_scale) and not on_disk(ram._snap.tokens)
    assert disk.memory_bytes()["tokens"] == 0 and disk._snap.disk_nbytes()["tokens"] == ram.memory_bytes()["tokens"]
    assert list((tmp_path / "tok").iterdir()) == []
    assert _per_item(disk._snap) == _per_item(ram._snap)
    _write(store, _doc("/c.pdf", 7, seed=3))  # appended past the high-water mark, into the mapped file
    disk.refresh(), ram.refresh()
    assert disk._snap.loaded["mode"] == "incremental" and disk._snap.tokens is not None
    assert _per_item(disk._snap) == _per_item(ram._snap)
    f = SearchFilters(collection="c")
    q = _unit(np.random.default_rng(9).standard_normal((3, DIM)))
    assert [h.id for h in disk.search_visual(q, 5, filters=f)] == [h.id for h in ram.search_visual(q, 5, filters=f)]


def test_refresh_after_compaction_reads_new_row_ids(store: LanceStore) -> None:
    index = SearchIndex.from_store(store, {"exact_k": 3, "first_stage_k": 8})
    for k, uri in enumerate(["/c.pdf", "/d.pdf", "/e.pdf"]):
        _write(store, _doc(uri, 5, seed=10 + k))
    store.delete_document("c", "/d.pdf")
    index.refresh()
    before = dict(zip(index._snap.ids, index._snap.row_ids.tolist(), strict=True))

    store.optimize()  # compacts the fragments: surviving rows get new row ids
    assert index.refresh() is True
    after = dict(zip(index._snap.ids, index._snap.row_ids.tolist(), strict=True))
    assert after.keys() == before.keys()
    assert any(after[i] != before[i] for i in after), "the compaction moved no row: the test proves nothing"
    _assert_same_as_full(index, store)  # the exact stage and texts are read by the new row ids

    _write(store, _doc("/f.pdf", 4, seed=20))
    index.refresh()
    _assert_same_as_full(index, store)


def test_a_schema_change_loads_in_full(tmp_path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    store.ensure_tables(DIM)  # no text model yet
    rows = [{k: v for k, v in r.items() if k not in ("context", "text_vectors", S.TEXT_VECTOR, "text_model_id")}
            for r in _doc("/a.pdf", 4, seed=1)]  # fmt: skip
    store.add_items(pa.Table.from_pylist(rows, schema=S.items_schema(DIM)))
    store.finish_documents([FinishedDocument("c", "/a.pdf", "h", "pdf", 4, 0, "m")])
    index = SearchIndex.from_store(store)
    assert index._snap.text is None

    store.ensure_tables(DIM, TDIM)  # the text model's columns are added
    _write(store, _doc("/b.pdf", 3, seed=2))
    index.refresh()
    assert index._snap.loaded["mode"] == "full" and index._snap.text is not None
    _write(store, _doc("/c.pdf", 3, seed=3))
    index.refresh()
    assert index._snap.loaded["mode"] == "incremental"
    store.refresh_text_index()
    index.refresh()
    _assert_same_as_full(index, store)


def test_mostly_new_items_load_in_full(store: LanceStore) -> None:
    index = SearchIndex.from_store(store, {"incremental_max_new": 0.5, "fetch_chunk_rows": 4})
    _write(store, _doc("/big.pdf", 26, seed=7))  # 26 new of 47 (hybrid fuses BM25's top 50: all of them)
    index.refresh()
    _assert_same_as_full(index, store, mode="full")


def test_arena_appends_in_place_and_compacts_when_holes_pile_up(tmp_path) -> None:
    arena = np.arange(20, dtype=np.int8).reshape(10, 2)
    lens = np.array([2, 3, 0], np.int64)
    start = np.array([0, 2, 0], np.int64)  # rows 0, 1 kept; row 2 fresh but empty
    out, _, start2, used = make_room(arena, None, 5, start.copy(), lens, np.array([2]))
    assert out is arena and used == 5

    lens = np.array([3, 2], np.int64)  # row 0 (was at 2) kept, row 1 fresh: goes past the old high-water mark
    out, _, start2, used = make_room(arena, None, 5, np.array([2, 0]), lens, np.array([1]))
    assert out is arena and start2.tolist() == [2, 5] and used == 7

    lens = np.array([2, 3], np.int64)  # the tail is too short: a new arena, rows in order, holes gone
    scales = np.arange(10, dtype=np.float32)
    out, sc, start2, used = make_room(arena, scales, 9, np.array([7, 0]), lens, np.array([1]))
    assert out is not arena and start2.tolist() == [0, 2] and used == 5
    np.testing.assert_array_equal(out[:2], arena[7:9])
    np.testing.assert_array_equal(sc[:2], scales[7:9])

    # the disk tier: the new arena is a memory-mapped file with the same contents
    disk = Arena("disk", str(tmp_path))
    out, sc, start2, used = make_room(arena, scales, 9, np.array([7, 0]), lens, np.array([1]), disk)
    assert on_disk(out) and on_disk(sc) and start2.tolist() == [0, 2] and used == 5
    np.testing.assert_array_equal(out[:2], arena[7:9])
    np.testing.assert_array_equal(sc[:2], scales[7:9])
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped


def test_codes_drop_values_nobody_uses_any_more() -> None:
    c = Codes([f"d{i}" for i in range(100)])
    kept = np.arange(10)
    out = c.updated(12, kept, np.arange(90, 100), np.array([10, 11]), ["d5", "new"])
    assert [out[r] for r in range(12)] == [f"d{i}" for i in range(90, 100)] + ["d5", "new"]
    assert len(out.values) == 12 and out.mask(["new"]).tolist() == [False] * 11 + [True]


# ------------------------------------------------------------------------------------------------ concurrency
def test_a_refresh_in_progress_is_invisible_to_searches(store: LanceStore, monkeypatch) -> None:
    index = SearchIndex.from_store(store, {"exact_k": 3, "first_stage_k": 8})
    old = index._snap
    expected_old = _hits(index)
    paused, go = threading.Event(), threading.Event()
    real = Codes.updated

    def slow(self, *a, **kw):  # the new items' tokens are already in the shared arena by now
        paused.set()
        assert go.wait(30)
        return real(self, *a, **kw)

    monkeypatch.setattr(Codes, "updated", slow)
    for k in range(6):
        _write(store, _doc(f"/n{k}.pdf", 4, seed=30 + k))
    store.delete_document("c", "/a.pdf")
    worker = threading.Thread(target=index.refresh)
    worker.start()
    assert paused.wait(30)
    assert index._snap is old and _hits(index) == expected_old  # searches see the old snapshot, whole
    go.set()
    worker.join(30)
    monkeypatch.setattr(Codes, "updated", real)
    assert index._snap is not old
    _assert_same_as_full(index, store)


def test_searches_during_refreshes_match_a_full_load_of_their_version(store: LanceStore) -> None:
    index = SearchIndex.from_store(store, {"exact_k": 3, "first_stage_k": 8})
    q = _unit(np.random.default_rng(0).standard_normal((3, DIM)))
    seen: list[tuple[int, list]] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def search() -> None:
        try:
            while not stop.is_set():
                v0 = index.version
                hits = index.search_visual(q, 8, filters=SearchFilters(collection="c"))
                if index.version == v0:  # versions only grow: the search ran on v0's snapshot
                    seen.append((v0, [(h.id, round(h.score, 5)) for h in hits]))
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=search)
    t.start()
    for k in range(8):
        _write(store, _doc(f"/s{k}.pdf", 3, seed=40 + k))
        if k % 3 == 2:
            store.delete_document("c", f"/s{k - 1}.pdf")
        index.refresh()
    stop.set()
    t.join(30)
    assert not errors, errors
    versions = {v for v, _ in seen}
    assert len(versions) >= 2, "the searcher saw only one version: the test proves nothing"
    db_table = store._db.open_table(S.ITEMS)
    for v in versions:
        db_table.checkout(v)
        full = SearchIndex(index.config)
        full._snap = load_snapshot(db_table, v, None, index.config)
        want = [(h.id, round(h.score, 5)) for h in full.search_visual(q, 8, filters=SearchFilters(collection="c"))]
        assert all(got == want for vv, got in seen if vv == v), f"version {v}"
        db_table = store._db.open_table(S.ITEMS)


def test_text_vectors_update_keeps_the_first_stage_projection_until_the_collection_doubles() -> None:
    from mmrag.store.dense import TextVectors

    rng = np.random.default_rng(0)
    wins = [_unit(rng.standard_normal((int(rng.integers(1, 4)), 16))) for _ in range(40)]
    old = TextVectors.build(30, 16, ((r, wins[r], None) for r in range(30)))
    old._projected()
    kept, src = np.arange(25), np.arange(5, 30)  # rows 0-4 removed, 10 added at the end
    new = old.updated(35, kept, src, ((25 + j, wins[30 + j], None) for j in range(10)))
    full = TextVectors.build(35, 16, ((r, wins[r + 5], None) for r in range(35)))
    for r in range(35):
        a, b = slice(new.start[r], new.start[r] + new.count[r]), slice(full.start[r], full.start[r] + full.count[r])
        np.testing.assert_array_equal(new.chunks[a], full.chunks[b])
    np.testing.assert_array_equal(new.mean, full.mean)
    assert new.proj is old.proj
    np.testing.assert_allclose(new.mean_r, new.mean @ new.proj, rtol=1e-5, atol=1e-6)
    bigger = new.updated(61, np.arange(35), np.arange(35), ((35 + j, wins[j % 40], None) for j in range(26)))
    assert bigger.proj is None  # 61 items with text > twice the 30 it was computed from: recomputed on first use


def _without_text_vectors(rows: list[dict]) -> list[dict]:
    return [{**r, "text_vectors": None, S.TEXT_VECTOR: None, "text_model_id": None} for r in rows]


def test_text_vectors_added_after_publishing_reach_the_snapshot(store: LanceStore) -> None:
    """ingestor.text_after_publish: a document published without dense text vectors is searchable by the other
    channels at once; its vectors merged in later rewrite its rows under the same ids, and a refresh reads them."""
    index = SearchIndex.from_store(store, {"exact_k": 3, "first_stage_k": 8})
    rows = _doc("/late.pdf", 5, seed=30)
    _write(store, _without_text_vectors(rows))
    index.refresh()
    late = {r["id"] for r in rows}
    rng = np.random.default_rng(31)
    q, qv = _unit(rng.standard_normal((3, DIM))), _unit(rng.standard_normal(TDIM))
    f = SearchFilters(collection="c")
    assert late & {h.id for h in index.search("visual", q, "", 50, filters=f)}, "published but not searchable"
    assert not late & {h.id for h in index.search("dense", q, "", 50, filters=f, query_vec=qv)}
    assert store.items_without_text_vectors("c").column("id").to_pylist() == [r["id"] for r in rows]

    vectors = pa.Table.from_pylist(
        [
            {"id": r["id"], "text_vectors": r["text_vectors"], S.TEXT_VECTOR: r[S.TEXT_VECTOR], "text_model_id": "t"}
            for r in rows
        ]
    )
    assert store.set_text_vectors(vectors) == 5
    assert store.items_without_text_vectors("c").num_rows == 0
    assert index.refresh() is True
    assert index._snap.loaded == {"mode": "incremental", "rows": 26, "added": 5, "removed": 5}  # re-read
    _assert_same_as_full(index, store)
    assert late <= {h.id for h in index.search("dense", q, "", 50, filters=f, query_vec=qv)}

    # a compaction moves every row but re-reads none of those that had their vectors
    store.optimize()
    index.refresh()
    assert index._snap.loaded["added"] == 0
    _assert_same_as_full(index, store)


def test_a_new_stores_first_publish_is_searchable_by_keywords(tmp_path) -> None:
    """The full-text index is built before a fresh store's first documents are published (BM25 answered 400 'no
    full-text index' in the moment between the two)."""
    from mmrag.ingest.pipeline import fill_text_vectors

    s = LanceStore(str(tmp_path / "db"))
    s.ensure_tables(DIM, TDIM)
    rows = _without_text_vectors(_doc("/a.pdf", 3, seed=1))
    s.add_items(pa.Table.from_pylist(rows, schema=S.items_schema(DIM, TDIM)))
    assert s.ensure_text_index() is True and s.ensure_text_index() is False
    s.finish_documents([FinishedDocument("c", "/a.pdf", "h", "pdf", 3, 0, "m")])
    index = SearchIndex.from_store(s)
    hits = index.search("text", None, rows[0]["text"], 5, filters=SearchFilters(collection="c"))
    assert hits and {h.id for h in hits} <= {r["id"] for r in rows}

    def embed(batch: pa.Table) -> pa.Table:  # TextEmbedStage's contract: the text columns appended
        assert set(batch.column("kind").to_pylist()) == {"item"}
        n = batch.num_rows
        wins = [_unit(np.ones((1, TDIM))).tolist()] * n
        return (batch.append_column("text_vectors", pa.array(wins, pa.list_(pa.list_(pa.float32(), TDIM))))
                .append_column(S.TEXT_VECTOR, pa.array([w[0] for w in wins], pa.list_(pa.float32(), TDIM)))
                .append_column("text_model_id", pa.array(["t"] * n)))  # fmt: skip

    assert fill_text_vectors(s, embed, collection="c", doc_ids=[S.doc_id("c", "/other.pdf")]) == 0
    assert fill_text_vectors(s, embed, collection="c") == 3
    assert fill_text_vectors(s, embed) == 0
    got = s.table(S.ITEMS).search().select(["id", "visible", "text", "text_model_id"]).limit(None).to_list()
    assert {(g["id"], g["visible"], g["text"], g["text_model_id"]) for g in got} == {
        (r["id"], True, r["text"], "t") for r in rows
    }


# ------------------------------------------------------------------------------------------------ int8 token copies
def test_written_items_carry_copies_and_a_new_replica_reads_only_them(tmp_path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    store.ensure_tables(DIM, TDIM)
    _write(store, _doc("/a.pdf", 7, seed=1))
    _write(store, _doc("/b.pdf", 5, seed=2))
    tbl = store.table(S.ITEMS)
    rows = tbl.search().select(["multivector", S.TOKENS_I8, S.TOKEN_SCALES]).limit(None).to_arrow()
    assert rows.column(S.TOKENS_I8).null_count == 0
    for mv, tk, sc in zip(*(rows.column(c).to_pylist() for c in rows.column_names), strict=True):
        q, s = quantise(np.asarray(mv, np.float32), "int8")
        assert np.array_equal(np.asarray(tk, np.int8).reshape(-1, DIM), q) and np.array_equal(np.float32(sc), s)

    ix = SearchIndex.from_store(store)
    assert ix._snap is not None and ix._snap.loaded["tokens_from"] == {"int8_copies": 12}
    # the same snapshot as one quantised from the multivectors (float16 store aside, the old load path)
    mv_only = _load_from_multivectors(tbl)
    assert _per_item(ix._snap) == _per_item(mv_only)


def _load_from_multivectors(tbl) -> object:
    """A full load that ignores the copies (the schema without them), for comparison."""
    import unittest.mock as mock

    with mock.patch.object(T, "has_copies", lambda schema: False):
        snap = load_snapshot(tbl, tbl.version, None, SearchIndexConfig(), incremental=False)
    assert snap.loaded["tokens_from"] == {"multivectors": snap.n}
    return snap


def _visual_hits(index: SearchIndex) -> list:
    return [h for h in _hits(index) if h and h[0][0] == "visual"]


def _old_schema() -> pa.Schema:
    s = S.items_schema(DIM, TDIM)
    return pa.schema([f for f in s if f.name not in (S.TOKENS_I8, S.TOKEN_SCALES)])


def test_a_store_made_before_the_copies_works_and_optimize_fills_them(tmp_path) -> None:
    """Old rows (no copies) are read from their multivectors, in full and incremental loads, next to new rows read
    from their copies; searches are the same throughout; optimize gives the old rows copies."""
    store = LanceStore(str(tmp_path / "db"))
    db = store._db
    db.create_table(S.ITEMS, schema=_old_schema())
    store.ensure_tables(DIM, TDIM)  # the pre-copy store is migrated: null copies for what it holds
    tbl = store.table(S.ITEMS)
    old_rows = pa.Table.from_pylist(_doc("/old.pdf", 6, seed=3), schema=_old_schema())
    tbl.add(old_rows.set_column(old_rows.schema.get_field_index("visible"), "visible", pa.array([True] * 6)))
    store.refresh_text_index()

    index = SearchIndex.from_store(store)
    assert index._snap.loaded["tokens_from"] == {"multivectors": 6}
    _write(store, _doc("/new.pdf", 4, seed=4))  # written now: with copies
    index.refresh()
    assert index._snap.loaded["mode"] == "incremental"
    full = load_snapshot(store.table(S.ITEMS), index._snap.version, None, SearchIndexConfig(), incremental=False)
    assert full.loaded["tokens_from"] == {"int8_copies": 4, "multivectors": 6}
    assert _per_item(index._snap) == _per_item(full)
    before = _hits(index)

    # an old row appended without copies lands in an incremental refresh too (read from its multivector)
    late = pa.Table.from_pylist(_doc("/late.pdf", 2, seed=5), schema=_old_schema())
    store.table(S.ITEMS).add(late.set_column(late.schema.get_field_index("visible"), "visible", pa.array([True] * 2)))
    index.refresh()
    assert index._snap.loaded["mode"] == "incremental" and index._snap.n == 12
    full = load_snapshot(store.table(S.ITEMS), index._snap.version, None, SearchIndexConfig(), incremental=False)
    assert _per_item(index._snap) == _per_item(full)
    searched = _visual_hits(index)
    assert searched != [h for h in before if h and h[0][0] == "visual"]  # the late document is found

    report = store.optimize(keep_versions_s=0)
    assert report["token_copies_filled"] == 8
    assert store.table(S.ITEMS).count_rows(f"{S.TOKENS_I8} IS NULL") == 0
    fresh = SearchIndex.from_store(store)
    assert fresh._snap.loaded["tokens_from"] == {"int8_copies": 12}
    by_id = _per_item(fresh._snap)
    assert {i: v[:-1] for i, v in by_id.items()} == {i: v[:-1] for i, v in _per_item(full).items()}  # row ids moved
    index.refresh()  # the running replica takes the merged rows without re-reading tokens it holds
    assert _visual_hits(index) == searched  # (BM25's scores move when optimize folds new rows into its index)
    assert {i: v[:-1] for i, v in _per_item(index._snap).items()} == {i: v[:-1] for i, v in by_id.items()}
    assert store.optimize(keep_versions_s=0)["token_copies_filled"] == 0
