"""Video summaries in a real embedded LanceDB: the video's clips in time order, the cache's keys, and the
invalidation when the video is re-ingested with other bytes or deleted."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from mmrag.store import FinishedDocument, LanceStore, summaries
from mmrag.store import schema as S

pytestmark = pytest.mark.unit
DIM = 4
URI = "/v/talk.mp4"


def _ingest(
    store: LanceStore, content_hash: str, n: int, collection: str = "c", uri: str = URI, kind: str = "video"
) -> dict:
    mv = np.ones((2, DIM), dtype="float32")
    rows = [
        {
            "id": S.item_id(collection, uri, content_hash, "clip", i),
            "collection": collection,
            "doc_id": S.doc_id(collection, uri),
            "source_uri": uri,
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
    store.finish_documents([FinishedDocument(collection, uri, content_hash, kind, n, 0, "m")])
    doc = summaries.document(store, S.doc_id(collection, uri))
    assert doc is not None and doc["content_hash"] == content_hash and doc["kind"] == kind
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

    new = _ingest(store, "h2", 3)  # the video changed: its old summaries go as the new version is published
    assert store.table(summaries.SUMMARIES).count_rows() == 0
    summaries.save(store, new, "k3", {"summary": "new version"})
    assert store.table(summaries.SUMMARIES).count_rows() == 1
    assert summaries.cached(store, new["doc_id"], "k3") == {"summary": "new version"}

    store.delete_document("c", URI)
    assert summaries.cached(store, new["doc_id"], "k3") is None, "deleting the video drops its summaries"


def test_the_cli_finds_a_video_by_its_bytes_and_says_when_it_is_not_ingested(store: LanceStore, tmp_path) -> None:
    import hashlib

    from mmrag.cli.summarize import NotIngested, resolve_doc_id

    video = tmp_path / "talk.mp4"
    video.write_bytes(b"video bytes")
    digest = hashlib.sha256(b"video bytes").hexdigest()
    doc = _ingest(store, digest, 1, uri="upload://talk.mp4")  # uploaded: found by content, not by path
    assert resolve_doc_id(str(video), store, None) == doc["doc_id"]
    assert resolve_doc_id(doc["doc_id"], store, None) == doc["doc_id"], "an id is taken as it is"
    with pytest.raises(NotIngested, match="not ingested in collection 'other'"):
        resolve_doc_id(str(video), store, "other")
    _ingest(store, digest, 1, collection="d", uri=str(video))
    with pytest.raises(NotIngested, match="several collections"):
        resolve_doc_id(str(video), store, None)
    assert resolve_doc_id(str(video), store, "d") == S.doc_id("d", str(video))
    video.write_bytes(b"edited video bytes")
    with pytest.raises(NotIngested, match="changed since it was ingested"):
        resolve_doc_id(str(video), store, "d")
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"pdf bytes")
    _ingest(store, hashlib.sha256(b"pdf bytes").hexdigest(), 1, uri=str(pdf), kind="pdf")
    with pytest.raises(NotIngested, match="not a video"):
        resolve_doc_id(str(pdf), store, None)
    with pytest.raises(FileNotFoundError, match="neither a file nor a document id"):
        resolve_doc_id(str(tmp_path / "missing.mp4"), store, None)
