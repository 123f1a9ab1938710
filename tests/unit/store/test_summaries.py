"""Video summaries in a real embedded LanceDB: the video's clips in time order, the cache's keys, and the
invalidation when the video is re-ingested with other bytes or deleted."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from mmrag.store import FinishedDocument, LanceStore
from mmrag.store import schema as S
from mmrag.store import summaries

pytestmark = pytest.mark.unit
DIM = 4
URI = "/v/talk.mp4"


def _ingest(store: LanceStore, content_hash: str, n: int, collection: str = "c") -> dict:
    mv = np.ones((2, DIM), dtype="float32")
    rows = [
        {
            "id": S.item_id(collection, URI, content_hash, "clip", i),
            "collection": collection,
            "doc_id": S.doc_id(collection, URI),
            "source_uri": URI,
            "content_hash": content_hash,
            "modality": "clip",
            "start_s": 10.0 * i,
            "end_s": 10.0 * i + 10.0,
            "text": f"clip {i}",
            "frames": [b"jpeg"],
            "multivector": mv.tolist(),
            "pooled": mv.mean(0).tolist(),
            "n_tokens": 2,
            "model_id": "m",
            "ingested_at": dt.datetime.now(dt.UTC),
            "visible": False,
        }
        for i in reversed(range(n))  # written out of order: read back in time order
    ]
    store.add_items(pa.Table.from_pylist(rows, schema=S.items_schema(DIM)))
    store.finish_documents([FinishedDocument(collection, URI, content_hash, "video", n, 0, "m")])
    doc = summaries.document(store, S.doc_id(collection, URI))
    assert doc is not None and doc["content_hash"] == content_hash and doc["kind"] == "video"
    return doc


@pytest.fixture
def store(tmp_path) -> LanceStore:
    s = LanceStore(str(tmp_path / "db"))
    s.ensure_tables(DIM)
    return s


def test_clips_in_time_order_frames_only_when_asked(store: LanceStore) -> None:
    doc = _ingest(store, "h1", 3)
    clips = summaries.clips(store, doc)
    assert [c["start_s"] for c in clips] == [0.0, 10.0, 20.0] and "frames" not in clips[0]
    assert summaries.clips(store, doc, frames=True)[0]["frames"] == [b"jpeg"]
    assert summaries.documents_by_hash(store, "h1")[0]["doc_id"] == doc["doc_id"]
    assert summaries.document(store, "0" * 32) is None


def test_cache_hit_miss_and_invalidation(store: LanceStore) -> None:
    doc = _ingest(store, "h1", 2)
    assert summaries.cached(store, doc["doc_id"], "k1") is None, "no table yet: a miss, not an error"
    summaries.save(store, doc, "k1", {"summary": "first"})
    summaries.save(store, doc, "k2", {"summary": "by another model"})
    assert summaries.cached(store, doc["doc_id"], "k1") == {"summary": "first"}
    summaries.save(store, doc, "k1", {"summary": "refreshed"})
    assert summaries.cached(store, doc["doc_id"], "k1") == {"summary": "refreshed"}
    assert store.table(summaries.SUMMARIES).count_rows() == 2, "a refresh replaces its row"

    new = _ingest(store, "h2", 3)  # the video changed: its old summaries go when the new one is stored
    summaries.save(store, new, "k3", {"summary": "new version"})
    assert store.table(summaries.SUMMARIES).count_rows() == 1
    assert summaries.cached(store, new["doc_id"], "k3") == {"summary": "new version"}

    store.delete_document("c", URI)
    assert summaries.cached(store, new["doc_id"], "k3") is None, "deleting the video drops its summaries"
