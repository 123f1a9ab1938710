"""Video summaries in the store: the video's clips in time order, and the summaries cache table.

``video_summaries`` holds one row per (document, cache key): the summary as JSON. The key hashes what a summary
depends on (the video's content hash, the generator model, the prompt version and the summary settings), so a
re-ingested video with other bytes, or another generator, never finds an old summary; the row of an older version
is dropped when the video is re-ingested (:meth:`LanceStore.finish_documents`) or a new summary is written, and
:meth:`LanceStore.delete_document` drops a deleted video's. The table is
created on first write (nothing to migrate in an older store).

Filters are built with LanceDB's typed expressions (quoted literals), as everywhere in the store.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa

from mmrag.store import schema as S

SUMMARIES = "video_summaries"
SUMMARIES_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("collection", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("cache_key", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("result", pa.string(), nullable=False),
    ]
)
#: Columns of a clip a summary reads (``frames`` only for a vision-language generator).
CLIP_COLUMNS = ["id", "source_uri", "modality", "start_s", "end_s", "text", "frame_ts"]
#: Documents that have summaries (``documents.kind``), and the items they are made of: a timed kind of file added
#: later (e.g. audio) joins here.
SUMMARY_KINDS = ("video",)
TIMED_MODALITIES = ("clip",)


def document(store: Any, doc_id: str) -> dict[str, Any] | None:
    """The finished ``documents`` row of ``doc_id`` (any collection), or None."""
    from lancedb.expr import col, lit

    if not store.has_table(S.DOCUMENTS):
        return None
    rows = store.table(S.DOCUMENTS).search().where((col("doc_id") == lit(doc_id)).to_sql()).limit(1).to_list()
    return rows[0] if rows else None


def documents_by_hash(store: Any, content_hash: str) -> list[dict[str, Any]]:
    """Every finished document whose bytes hash to ``content_hash`` (the same file may be in several collections)."""
    from lancedb.expr import col, lit

    if not store.has_table(S.DOCUMENTS):
        return []
    where = (col("content_hash") == lit(content_hash)).to_sql()
    return store.table(S.DOCUMENTS).search().where(where).limit(None).to_list()  # type: ignore[no-any-return]


def clips(store: Any, doc: dict[str, Any], *, frames: bool = False) -> list[dict[str, Any]]:
    """The visible clips of the version of ``doc`` (a documents row), in time order."""
    from lancedb.expr import col, lit

    if not store.has_items():
        return []
    where = (
        (col("collection") == lit(doc["collection"]))
        & (col("doc_id") == lit(doc["doc_id"]))
        & (col("content_hash") == lit(doc["content_hash"]))
        & col("modality").isin(list(TIMED_MODALITIES))
        & (col("visible") == lit(True))
    ).to_sql()
    cols = CLIP_COLUMNS + (["frames"] if frames else [])
    rows = store.table(S.ITEMS).search().where(where).select(cols).limit(None).to_list()
    return sorted(rows, key=lambda r: (r["start_s"] or 0.0, r["end_s"] or 0.0))


def cached(store: Any, doc_id: str, cache_key: str) -> dict[str, Any] | None:
    """The summary stored under ``cache_key`` for ``doc_id``, or None."""
    from lancedb.expr import col, lit

    if not store.has_table(SUMMARIES):
        return None
    tbl = store.table(SUMMARIES)
    tbl.checkout_latest()  # another gateway replica may have written it
    where = ((col("doc_id") == lit(doc_id)) & (col("cache_key") == lit(cache_key))).to_sql()
    rows = tbl.search().where(where).select(["result"]).limit(1).to_list()
    return json.loads(rows[0]["result"]) if rows else None


def save(store: Any, doc: dict[str, Any], cache_key: str, result: dict[str, Any]) -> None:
    """Store ``result`` under ``cache_key``, replacing an older row with the same key and every summary of another
    version of the video (its content hash changed). Summaries of the same bytes by another model stay."""
    from lancedb.expr import col, lit

    tbl = store.ensure_table(SUMMARIES, SUMMARIES_SCHEMA)
    now = dt.datetime.now(dt.UTC)
    row = {
        "doc_id": doc["doc_id"],
        "collection": doc["collection"],
        "content_hash": doc["content_hash"],
        "cache_key": cache_key,
        "created_at": now,
        "result": json.dumps(result, separators=(",", ":"), ensure_ascii=False),
    }
    tbl.add(pa.Table.from_pylist([row], schema=SUMMARIES_SCHEMA))  # the new row first: a reader never sees none
    mine = col("doc_id") == lit(doc["doc_id"])
    stale = (col("content_hash") != lit(doc["content_hash"])) | (
        (col("cache_key") == lit(cache_key)) & (col("created_at") < lit(now))
    )
    tbl.delete((mine & stale).to_sql())


def drop_stale(store: Any, versions: list[tuple[str, str]]) -> None:
    """Drop the summaries of other versions of these ``(doc_id, content_hash)`` documents (just re-ingested)."""
    from lancedb.expr import col, lit

    if not versions or not store.has_table(SUMMARIES):
        return
    conds = [(col("doc_id") == lit(d)) & (col("content_hash") != lit(h)) for d, h in versions]
    where = conds[0]
    for c in conds[1:]:
        where = where | c
    store.table(SUMMARIES).delete(where.to_sql())


def forget(store: Any, collection: str, doc_id: str) -> None:
    """Drop every cached summary of a document (it was deleted)."""
    from lancedb.expr import col, lit

    if store.has_table(SUMMARIES):
        where = ((col("collection") == lit(collection)) & (col("doc_id") == lit(doc_id))).to_sql()
        store.table(SUMMARIES).delete(where)


__all__ = [
    "SUMMARIES",
    "SUMMARIES_SCHEMA",
    "SUMMARY_KINDS",
    "TIMED_MODALITIES",
    "cached",
    "clips",
    "document",
    "documents_by_hash",
    "drop_stale",
    "forget",
    "save",
]
