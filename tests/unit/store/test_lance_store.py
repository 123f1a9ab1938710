"""The LanceDB store on a real embedded database: the write protocol, deletes, safe filters."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from mmrag.store import FinishedDocument, LanceStore, StoreError
from mmrag.store import schema as S

pytestmark = pytest.mark.unit
DIM = 4


def _rows(collection: str, uri: str, content_hash: str, n: int, *, text: str = "page") -> pa.Table:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        mv = rng.standard_normal((3, DIM)).astype("float32")
        out.append(
            {
                "id": S.item_id(collection, uri, content_hash, "page", i),
                "collection": collection,
                "doc_id": S.doc_id(collection, uri),
                "source_uri": uri,
                "content_hash": content_hash,
                "modality": "page",
                "page": i + 1,
                "text": f"{text} {i}",
                "multivector": mv.tolist(),
                "pooled": mv.mean(0).tolist(),
                "n_tokens": 3,
                "model_id": "m",
                "ingested_at": dt.datetime.now(dt.UTC),
                "visible": False,
            }
        )
    return pa.Table.from_pylist(out, schema=S.items_schema(DIM))


def _finish(store: LanceStore, collection: str, uri: str, h: str, n: int) -> None:
    store.finish_documents([FinishedDocument(collection, uri, h, "pdf", n, 0, "m")])


@pytest.fixture
def store(tmp_path) -> LanceStore:
    s = LanceStore(str(tmp_path / "db"))
    s.ensure_tables(DIM)
    return s


def test_rows_are_invisible_until_the_document_finishes(store: LanceStore) -> None:
    store.add_items(_rows("c", "/a.pdf", "h1", 3))
    assert store.count_items() == 0 and store.count_items(visible_only=False) == 3
    assert store.current_hashes("c", ["/a.pdf"]) == {}
    _finish(store, "c", "/a.pdf", "h1", 3)
    assert store.count_items() == 3
    assert store.current_hashes("c", ["/a.pdf"]) == {"/a.pdf": "h1"}


def test_killed_attempt_is_cleaned_and_old_version_kept(store: LanceStore) -> None:
    store.add_items(_rows("c", "/a.pdf", "h1", 2))
    _finish(store, "c", "/a.pdf", "h1", 2)
    # a new version starts writing, then the process dies before finishing
    store.add_items(_rows("c", "/a.pdf", "h2", 1))
    assert store.count_items() == 2  # the old version is still what search sees
    # the next run starts over: the leftover invisible rows go, the old ones stay
    store.begin_documents("c", [("/a.pdf", "h2")])
    assert store.count_items(visible_only=False) == 2
    store.add_items(_rows("c", "/a.pdf", "h2", 3))
    _finish(store, "c", "/a.pdf", "h2", 3)
    assert store.count_items() == 3
    assert {r["content_hash"] for r in store.table(S.ITEMS).to_arrow().to_pylist()} == {"h2"}
    assert len(store.documents("c")) == 1


def test_delete_document_removes_rows_everywhere(store: LanceStore) -> None:
    for uri in ("/a.pdf", "/b.pdf"):
        store.add_items(_rows("c", uri, "h", 2))
        _finish(store, "c", uri, "h", 2)
    store.add_errors([{"collection": "c", "source_uri": "/a.pdf", "reason": "page 3 unreadable", "page": 3}], "r")
    assert store.delete_document("c", "/a.pdf") == 2
    assert store.count_items() == 2
    assert [d["source_uri"] for d in store.documents("c")] == ["/b.pdf"]
    assert store.errors("c") == []


def test_collections_are_isolated_even_against_injection(store: LanceStore) -> None:
    store.add_items(_rows("tenant-a", "/a.pdf", "h", 2))
    _finish(store, "tenant-a", "/a.pdf", "h", 2)
    evil = "x' OR '1'='1"
    assert store.count_items(evil) == 0
    assert store.documents(evil) == []
    assert store.current_hashes(evil, ["/a.pdf"]) == {}
    assert store.delete_document(evil, "/a.pdf") == 0
    assert store.count_items("tenant-a") == 2


def test_dimension_mismatch_is_a_clear_error(store: LanceStore) -> None:
    with pytest.raises(StoreError, match=r"4-dimensional .* 128-dimensional"):
        store.ensure_tables(128)


def test_stats_count_per_collection_and_modality(store: LanceStore) -> None:
    store.add_items(_rows("c", "/a.pdf", "h", 3))
    _finish(store, "c", "/a.pdf", "h", 3)
    store.add_errors([{"collection": "c", "source_uri": "/bad.pdf", "reason": "encrypted"}], "r")
    st = store.stats()["collections"]["c"]
    assert st == {"items": {"page": 3}, "documents": 1, "errors": 1}


def test_full_text_index_finds_words(store: LanceStore) -> None:
    store.add_items(_rows("c", "/a.pdf", "h", 3, text="survival analysis"))
    _finish(store, "c", "/a.pdf", "h", 3)
    store.refresh_text_index()
    hits = store.table(S.ITEMS).search("survival", query_type="fts").limit(5).to_list()
    assert len(hits) == 3
    (ix,) = store.stats()["indexes"]  # what `mmrag stats` shows
    assert ix["columns"] == ["text"] and ix["indexed_rows"] == 3 and ix["unindexed_rows"] == 0


def test_get_items_fetches_visible_rows_in_one_call(store: LanceStore) -> None:
    store.add_items(_rows("c", "/a.pdf", "h1", 3))
    ids = [S.item_id("c", "/a.pdf", "h1", "page", i) for i in range(3)]
    assert store.get_items(ids, ["page"]) == {}, "invisible rows are not served"
    _finish(store, "c", "/a.pdf", "h1", 3)
    got = store.get_items([ids[2], ids[0], ids[0], "f" * 32], ["page", "text"])
    assert set(got) == {ids[0], ids[2]}
    assert got[ids[2]] == {"id": ids[2], "page": 3, "text": "page 2"}


def test_scalar_indexes_serve_lookups_and_new_rows_are_still_found(store: LanceStore) -> None:
    store.add_items(_rows("c", "/a.pdf", "h1", 3))
    _finish(store, "c", "/a.pdf", "h1", 3)
    store.refresh_scalar_indexes()
    kinds = {tuple(i["columns"]): i["type"] for i in store.indexes()}
    assert kinds == {("id",): "BTree", ("doc_id",): "BTree", ("collection",): "Bitmap"}
    ids = [S.item_id("c", "/a.pdf", "h1", "page", i) for i in range(3)]
    assert store.get_item(ids[1], ["page"]) == {"page": 2}
    # rows written after the build are scanned until the next one, never missed
    store.add_items(_rows("d", "/b.pdf", "h2", 2))
    _finish(store, "d", "/b.pdf", "h2", 2)
    new = S.item_id("d", "/b.pdf", "h2", "page", 1)
    assert store.get_item(new, ["collection"]) == {"collection": "d"}
    store.refresh_scalar_indexes()  # rebuilt in place
    assert len(store.indexes()) == 3 and store.get_item(new, ["page"]) == {"page": 2}


def test_table_listing_is_remembered_once_a_table_exists(store: LanceStore, monkeypatch) -> None:
    assert store.has_items()
    calls = []
    real = store._db.table_names
    monkeypatch.setattr(store._db, "table_names", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(5):
        assert store.has_items() and store.has_table(S.DOCUMENTS)
    assert calls == [], "no LIST per call for tables already seen"
    assert not store.has_table("nope") and calls == [1], "an unknown one is looked up"
