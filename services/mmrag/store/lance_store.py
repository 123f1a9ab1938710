"""Access to an mmrag store in LanceDB: writing documents kill-safely, deleting, describing.

Write protocol (what makes ``mmrag ingest`` idempotent and safe to kill at any point):

1. A document's new rows are appended with ``visible = false``; leftovers of an earlier killed
   attempt at the same version are deleted first (:meth:`LanceStore.begin_documents`).
2. When all of a document's rows are written (:meth:`LanceStore.finish_documents`) its new rows
   are made visible, the rows of older versions are deleted, and only then is its ``documents``
   row written. A kill before step 2 leaves the old version searchable and the new rows invisible;
   the next run redoes the document. Nothing already stored is lost.

Filters are built with LanceDB's typed expression builder (``lancedb.expr``), which quotes every
literal: no user text is ever spliced into SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mmrag.store import schema as S
from mmrag.store.upkeep import StoreUpkeep


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class FinishedDocument:
    """What the pipeline knows about a document once all of its rows are written."""

    collection: str
    source_uri: str
    content_hash: str
    kind: str
    n_items: int
    n_errors: int
    model_id: str


class StoreError(ValueError):
    """The store cannot do what was asked; the message says why and what to do."""


class LanceStore(StoreUpkeep):
    """An mmrag store at one LanceDB URI (local directory or object store)."""

    def __init__(
        self,
        uri: str,
        *,
        storage_options: dict[str, str] | None = None,
        read_consistency_s: float | None = 0.0,
    ) -> None:
        import lancedb

        self.uri = uri
        interval = None if read_consistency_s is None else dt.timedelta(seconds=read_consistency_s)
        self._db = lancedb.connect(uri, storage_options=storage_options or None, read_consistency_interval=interval)
        self._tables: dict[str, Any] = {}
        self._seen: set[str] = set()

    @classmethod
    def from_config(cls, store_cfg: Any) -> LanceStore:
        return cls(
            store_cfg.uri,
            storage_options=store_cfg.storage_options,
            read_consistency_s=store_cfg.read_consistency_s,
        )

    # ------------------------------------------------------------------------------ tables
    def _names(self) -> set[str]:
        names = set(self._db.table_names())
        self._seen |= names
        return names

    def _has(self, name: str) -> bool:
        """Whether the store has table ``name``; a table seen once is remembered (mmrag never drops one), so read
        paths do not list the tables (a LIST request on object storage) on every call."""
        return name in self._seen or name in self._names()

    def has_items(self) -> bool:
        return self._has(S.ITEMS)

    def table(self, name: str) -> Any:
        if name not in self._tables:
            if not self._has(name):
                raise StoreError(f"the store at {self.uri} has no table {name!r}; ingest something first")
            self._tables[name] = self._db.open_table(name)
        return self._tables[name]

    def ensure_table(self, name: str, schema: pa.Schema) -> Any:
        """The table ``name``, created empty with ``schema`` if the store has none yet."""
        if name not in self._names():
            self._db.create_table(name, schema=schema, exist_ok=True)
            self._tables.pop(name, None)
        return self.table(name)

    def has_table(self, name: str) -> bool:
        return self._has(name)

    def items_dim(self) -> int | None:
        if not self.has_items():
            return None
        return self.table(S.ITEMS).schema.field("pooled").type.list_size

    def text_dim(self) -> int | None:
        """Dimension of the stored dense text vectors (None: no text columns, or no items table)."""
        return S.text_dim_of(self.table(S.ITEMS).schema) if self.has_items() else None

    def ensure_tables(self, dim: int, text_dim: int | None = None) -> None:
        """Create the tables for ``dim``-dimensional vectors (and ``text_dim``-dimensional text vectors), or check
        the existing ones match. A store made before the dense text channel gets its columns added (null)."""
        names = self._names()
        if S.ITEMS in names:
            have = self.items_dim()
            if have != dim:
                raise StoreError(
                    f"the store at {self.uri} holds {have}-dimensional vectors but the configured encoder "
                    f"makes {dim}-dimensional ones; use another store URI (store.uri) for this model"
                )
            if text_dim:
                have_text = self.text_dim()
                cols = set(self.table(S.ITEMS).schema.names)
                missing = [f for f in S.text_fields(text_dim) if f.name not in cols]
                if have_text is not None and have_text != text_dim:
                    raise StoreError(
                        f"the store at {self.uri} holds {have_text}-dimensional text vectors but the configured text "
                        f"model (models.text) makes {text_dim}-dimensional ones; use another store URI or the "
                        "model the store was built with"
                    )
                if missing:
                    self.table(S.ITEMS).add_columns(missing)
            cols = set(self.table(S.ITEMS).schema.names)
            missing_tokens = [f for f in S.TOKEN_FIELDS if f.name not in cols]
            if missing_tokens:  # a store made before the int8 token copies: old rows get theirs from optimize
                self.table(S.ITEMS).add_columns(missing_tokens)
        else:
            self._db.create_table(S.ITEMS, schema=S.items_schema(dim, text_dim), exist_ok=True)
        if S.DOCUMENTS not in names:
            self._db.create_table(S.DOCUMENTS, schema=S.DOCUMENTS_SCHEMA, exist_ok=True)
        if S.ERRORS not in names:
            self._db.create_table(S.ERRORS, schema=S.ERRORS_SCHEMA, exist_ok=True)
        self._tables.clear()

    # ------------------------------------------------------------------------------ reading
    def current_hashes(self, collection: str, source_uris: Sequence[str]) -> dict[str, str]:
        """source_uri -> content hash of its finished version, for those that have one."""
        from lancedb.expr import col, lit

        if not self._has(S.DOCUMENTS) or not source_uris:
            return {}
        out: dict[str, str] = {}
        tbl = self.table(S.DOCUMENTS)
        ids = [S.doc_id(collection, u) for u in source_uris]
        for chunk in _chunks(ids, 500):
            where = ((col("collection") == lit(collection)) & col("doc_id").isin(chunk)).to_sql()
            rows = tbl.search().where(where).select(["source_uri", "content_hash"]).limit(None).to_list()
            out.update({r["source_uri"]: r["content_hash"] for r in rows})
        return out

    def stats(self) -> dict[str, Any]:
        """Counts per collection and modality (searchable rows only), documents and errors."""
        out: dict[str, Any] = {"uri": self.uri, "collections": {}}
        for name in self._created():
            out["collections"][name] = {"items": {}, "documents": 0, "errors": 0}
        if not self.has_items():
            return out
        counts = (
            self.table(S.ITEMS)
            .search()
            .where("visible = true")
            .select(["collection", "modality"])
            .limit(None)
            .to_arrow()
            .group_by(["collection", "modality"])
            .aggregate([("modality", "count")])
        )
        for r in counts.to_pylist():
            c = out["collections"].setdefault(r["collection"], {"items": {}, "documents": 0, "errors": 0})
            c["items"][r["modality"]] = r["modality_count"]
        out["indexes"] = self.indexes()
        for name, key in ((S.DOCUMENTS, "documents"), (S.ERRORS, "errors")):
            tbl = self.table(name).to_arrow().select(["collection"])
            for r in tbl.group_by("collection").aggregate([("collection", "count")]).to_pylist():
                c = out["collections"].setdefault(r["collection"], {"items": {}, "documents": 0, "errors": 0})
                c[key] = r["collection_count"]
        return out

    def documents(self, collection: str | None = None) -> list[dict[str, Any]]:
        from lancedb.expr import col, lit

        if not self._has(S.DOCUMENTS):
            return []
        q = self.table(S.DOCUMENTS).search()
        if collection is not None:
            q = q.where((col("collection") == lit(collection)).to_sql())
        return q.limit(None).to_list()

    def errors(self, collection: str | None = None) -> list[dict[str, Any]]:
        from lancedb.expr import col, lit

        if not self._has(S.ERRORS):
            return []
        q = self.table(S.ERRORS).search()
        if collection is not None:
            q = q.where((col("collection") == lit(collection)).to_sql())
        return q.limit(None).to_list()

    def collections(self) -> set[str]:
        """Collections that hold at least one finished document, and those created empty."""
        names = set(self._created())
        if not self._has(S.DOCUMENTS):
            return names
        col = self.table(S.DOCUMENTS).search().select(["collection"]).limit(None).to_arrow()["collection"]
        return names | set(pc.unique(col).to_pylist())

    def _created(self) -> list[str]:
        if not self._has(S.COLLECTIONS):
            return []
        return self.table(S.COLLECTIONS).to_arrow().column("name").to_pylist()  # type: ignore[no-any-return]

    def create_collection(self, name: str) -> bool:
        """Record ``name`` as a collection (empty until documents arrive); False when it already existed."""
        S.validate_collection(name)
        if name in self.collections():
            return False
        tbl = self.ensure_table(S.COLLECTIONS, S.COLLECTIONS_SCHEMA)
        row = pa.Table.from_pylist([{"name": name, "created_at": _now()}], schema=S.COLLECTIONS_SCHEMA)
        tbl.merge_insert("name").when_not_matched_insert_all().execute(row)
        return True

    def forget_collection(self, name: str) -> None:
        """Drop what is left of a collection whose documents were deleted: its record, errors and calibration."""
        from lancedb.expr import col, lit

        where = (col("collection") == lit(name)).to_sql()
        if self._has(S.ERRORS):
            self.table(S.ERRORS).delete(where)
        if self._has(S.COLLECTIONS):
            self.table(S.COLLECTIONS).delete((col("name") == lit(name)).to_sql())
        self.delete_calibration(name)

    def multivectors(self, ids: Sequence[str]) -> dict[str, Any]:
        """id -> float32 [n_tokens, dim] array, for visible items among ``ids``."""
        import numpy as np
        from lancedb.expr import col, lit

        if not ids or not self.has_items():
            return {}
        out: dict[str, Any] = {}
        for chunk in _chunks(list(ids), 500):
            where = (col("id").isin(chunk) & (col("visible") == lit(True))).to_sql()
            tbl = self.table(S.ITEMS).search().where(where).select(["id", "multivector", "n_tokens"]).limit(None)
            t = tbl.to_arrow()
            flat = t["multivector"].combine_chunks()
            values = flat.flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            dim = flat.type.value_type.list_size
            offsets = flat.offsets.to_numpy()
            for i, item_id in enumerate(t["id"].to_pylist()):
                out[item_id] = values[offsets[i] * dim : offsets[i + 1] * dim].reshape(-1, dim)
        return out

    def get_item(self, item_id: str, columns: Sequence[str]) -> dict[str, Any] | None:
        """One visible item's chosen columns, or None."""
        from lancedb.expr import col, lit

        if not self.has_items():
            return None
        where = ((col("id") == lit(item_id)) & (col("visible") == lit(True))).to_sql()
        rows = self.table(S.ITEMS).search().where(where).select(list(columns)).limit(1).to_list()
        return rows[0] if rows else None

    def get_items(self, ids: Sequence[str], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> the chosen columns, for the visible items among ``ids`` (one scan per 500 ids)."""
        from lancedb.expr import col, lit

        if not ids or not self.has_items():
            return {}
        cols = list(dict.fromkeys(["id", *columns]))
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            where = (col("id").isin(chunk) & (col("visible") == lit(True))).to_sql()
            for row in self.table(S.ITEMS).search().where(where).select(cols).limit(None).to_list():
                out[row["id"]] = row
        return out

    def count_items(self, collection: str | None = None, *, visible_only: bool = True) -> int:
        from lancedb.expr import col, lit

        if not self.has_items():
            return 0
        conds = []
        if visible_only:
            conds.append(col("visible") == lit(True))
        if collection is not None:
            conds.append(col("collection") == lit(collection))
        where = _and(conds)
        return self.table(S.ITEMS).count_rows(where.to_sql() if where is not None else None)

    # ------------------------------------------------------------------------------ writing
    def begin_documents(self, collection: str, versions: Iterable[tuple[str, str]]) -> None:
        """Drop invisible leftovers of killed attempts at these (source_uri, content_hash) versions."""
        from lancedb.expr import col, lit

        if not self.has_items():
            return
        ids = [S.doc_id(collection, uri) for uri, _ in versions]
        for chunk in _chunks(ids, 500):
            where = (col("collection") == lit(collection)) & col("doc_id").isin(chunk) & (col("visible") == lit(False))
            self.table(S.ITEMS).delete(where.to_sql())

    def add_items(self, rows: pa.Table) -> None:
        """Append item rows (written invisible; :meth:`finish_documents` publishes them)."""
        from mmrag.store import tokens

        if rows.num_rows:
            rows = rows.set_column(rows.schema.get_field_index("visible"), "visible", pa.array([False] * rows.num_rows))
            tbl = self.table(S.ITEMS)
            if tokens.has_copies(tbl.schema):
                rows = tokens.with_copies(rows, tbl.schema.field("pooled").type.list_size)
            else:  # a store not migrated yet (ensure_tables adds the columns)
                rows = rows.drop_columns([c for c in (S.TOKENS_I8, S.TOKEN_SCALES) if c in rows.column_names])
            tbl.add(rows)

    def items_without_text_vectors(
        self, collection: str | None = None, doc_ids: Sequence[str] | None = None
    ) -> pa.Table:
        """Visible items with text or context that no text model has embedded yet (``text_model_id`` null): their
        ``id``, ``text`` and ``context``. Empty when the store has no dense text channel."""
        from lancedb.expr import col, lit

        empty = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string()),
                          "context": pa.array([], pa.string())})  # fmt: skip
        if not self.has_items() or self.text_dim() is None:
            return empty
        where = "visible = true AND text_model_id IS NULL AND (text IS NOT NULL OR context IS NOT NULL)"
        if collection is not None:
            where += " AND " + (col("collection") == lit(collection)).to_sql()
        tbl = self.table(S.ITEMS)
        parts = []
        for chunk in _chunks(list(doc_ids), 500) if doc_ids is not None else [None]:
            w = where if chunk is None else where + " AND " + col("doc_id").isin(chunk).to_sql()
            parts.append(tbl.search().where(w).select(["id", "text", "context"]).limit(None).to_arrow())
        return pa.concat_tables(parts).select(["id", "text", "context"]) if parts else empty

    def set_text_vectors(self, rows: pa.Table) -> int:
        """Write the dense text columns (``text_vectors``, ``text_vector``, ``text_model_id``) of items that exist,
        by ``id``, leaving every other column as it is; ids no longer stored are ignored, as are rows without a
        vector. Returns rows updated."""
        if not rows.num_rows:
            return 0
        text_dim = self.text_dim()
        if text_dim is None:
            raise ValueError("this store has no dense text channel (no text_vector column)")
        want = pa.schema([pa.field("id", pa.string()), *[f for f in S.text_fields(text_dim) if f.name != "context"]])
        rows = pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in want], schema=want)
        # rows the model gave nothing (no words to embed, a failed batch) stay as they are: LanceDB's merge refuses
        # null vectors, and a later fill_text_vectors tries them again
        rows = rows.filter(pc.is_valid(rows.column(S.TEXT_VECTOR)))
        if not rows.num_rows:
            return 0
        out = self.table(S.ITEMS).merge_insert("id").when_matched_update_all().execute(rows)
        return int(getattr(out, "num_updated_rows", rows.num_rows))

    def ensure_text_index(self) -> bool:
        """Build the full-text index if the items table has none yet (a brand-new store): BM25 searches fail
        without one, while rows written after it are searched unindexed until the next rebuild. True if built."""
        if not self.has_items():
            return False
        tbl = self.table(S.ITEMS)
        if any(getattr(i, "columns", None) == ["text"] for i in tbl.list_indices()):
            return False
        tbl.create_fts_index("text", replace=True)
        return True

    def add_errors(self, rows: list[dict[str, Any]], run_id: str) -> None:
        """Record unreadable files/pages; a document's errors from earlier runs are replaced."""
        from lancedb.expr import col, lit

        if not rows:
            return
        ids = sorted({S.doc_id(r["collection"], r["source_uri"]) for r in rows})
        for chunk in _chunks(ids, 500):
            self.table(S.ERRORS).delete((col("doc_id").isin(chunk) & (col("run_id") != lit(run_id))).to_sql())
        now = _now()
        data = [
            {
                "collection": r["collection"],
                "source_uri": r["source_uri"],
                "doc_id": S.doc_id(r["collection"], r["source_uri"]),
                "content_hash": r.get("content_hash"),
                "page": r.get("page"),
                "reason": r["reason"],
                "run_id": run_id,
                "at": now,
            }
            for r in rows
        ]
        self.table(S.ERRORS).add(pa.Table.from_pylist(data, schema=S.ERRORS_SCHEMA))

    def finish_documents(self, docs: Sequence[FinishedDocument]) -> None:
        """Publish the new version of each document and drop its older versions (see module doc)."""
        from lancedb.expr import col, lit

        if not docs:
            return
        items = self.table(S.ITEMS)
        for d in docs:
            did = S.doc_id(d.collection, d.source_uri)
            mine = (col("collection") == lit(d.collection)) & (col("doc_id") == lit(did))
            items.update(where=(mine & (col("content_hash") == lit(d.content_hash))).to_sql(), values={"visible": True})
            items.delete((mine & (col("content_hash") != lit(d.content_hash))).to_sql())
        ids = [S.doc_id(d.collection, d.source_uri) for d in docs]
        from mmrag.store import summaries

        summaries.drop_stale(self, [(i, d.content_hash) for i, d in zip(ids, docs, strict=True)])  # changed videos
        documents = self.table(S.DOCUMENTS)
        for chunk in _chunks(ids, 500):
            documents.delete(col("doc_id").isin(chunk).to_sql())
        now = _now()
        documents.add(
            pa.Table.from_pylist(
                [
                    {
                        "doc_id": S.doc_id(d.collection, d.source_uri),
                        "collection": d.collection,
                        "source_uri": d.source_uri,
                        "content_hash": d.content_hash,
                        "kind": d.kind,
                        "n_items": d.n_items,
                        "n_errors": d.n_errors,
                        "model_id": d.model_id,
                        "ingested_at": now,
                    }
                    for d in docs
                ],
                schema=S.DOCUMENTS_SCHEMA,
            )
        )

    def delete_document(self, collection: str, source_uri: str) -> int:
        """Delete a document's rows everywhere; returns how many items were removed."""
        from lancedb.expr import col, lit

        if not self.has_items():
            return 0
        did = S.doc_id(collection, source_uri)
        where = ((col("collection") == lit(collection)) & (col("doc_id") == lit(did))).to_sql()
        n = self.table(S.ITEMS).count_rows(where)
        self.table(S.ITEMS).delete(where)
        self.table(S.DOCUMENTS).delete(where)
        self.table(S.ERRORS).delete(where)
        from mmrag.store import summaries

        summaries.forget(self, collection, did)  # a deleted video's cached summaries go with it
        return n

    # ------------------------------------------------------------------------------ calibration
    def save_calibration(self, collection: str, record: dict[str, Any], *, n_items: int, fingerprint: str) -> None:
        """Store (replace) a collection's calibration record."""
        import json

        from lancedb.expr import col, lit

        if not self._has(S.CALIBRATION):
            self._db.create_table(S.CALIBRATION, schema=S.CALIBRATION_SCHEMA, exist_ok=True)
            self._tables.pop(S.CALIBRATION, None)
        row = pa.Table.from_pylist(
            [
                {
                    "collection": collection,
                    "created_at": _now(),
                    "n_items": int(n_items),
                    "fingerprint": fingerprint,
                    "record": json.dumps(record, sort_keys=True),
                }
            ],
            schema=S.CALIBRATION_SCHEMA,
        )
        tbl = self.table(S.CALIBRATION)
        tbl.add(row)  # the new row first, then the old one goes: a reader never sees none
        tbl.delete(
            ((col("collection") == lit(collection)) & (col("created_at") < lit(row["created_at"][0].as_py()))).to_sql()
        )

    def delete_calibration(self, collection: str) -> None:
        """Forget a collection's calibration (its documents were all deleted)."""
        from lancedb.expr import col, lit

        if self._has(S.CALIBRATION):
            self.table(S.CALIBRATION).delete((col("collection") == lit(collection)).to_sql())

    def calibrations(self) -> dict[str, dict[str, Any]]:
        """collection -> its newest calibration record (``n_items``, ``fingerprint``, ``created_at`` added)."""
        import json

        if not self._has(S.CALIBRATION):
            return {}
        tbl = self.table(S.CALIBRATION)
        tbl.checkout_latest()
        out: dict[str, dict[str, Any]] = {}
        rows = tbl.search().limit(None).to_list()
        for r in sorted(rows, key=lambda r: r["created_at"]):
            rec = json.loads(r["record"])
            rec.update(n_items=r["n_items"], fingerprint=r["fingerprint"], created_at=r["created_at"].isoformat())
            out[r["collection"]] = rec
        return out

    def calibration(self, collection: str) -> dict[str, Any] | None:
        return self.calibrations().get(collection)


def _and(conds: list[Any]) -> Any:
    out = None
    for c in conds:
        out = c if out is None else out & c
    return out


def _chunks(seq: Sequence[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])
