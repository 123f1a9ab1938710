"""The search index's in-memory snapshot: what it holds per visible item, and how it is loaded from LanceDB.

A :class:`Snapshot` is immutable once built; :meth:`mmrag.store.search.SearchIndex.refresh` builds a new one with
:func:`load_snapshot` and swaps it in, so searches running in other threads never see a half-built index.

A refresh is incremental (:func:`update_snapshot`): it reads the ``id`` column of the visible rows (with their row
ids), keeps what the old snapshot holds for the ids still there, and fetches only the new ids' rows by row id. An
item id is a hash of its content, so a known id never needs re-reading, and a compaction that moved rows only changes
their row ids, which that scan reads anyway. The token vectors and text windows live in flat arenas shared with the
old snapshot: new items' vectors are written past the old snapshot's high-water mark, where no reader of it looks
(:func:`mmrag.store.cascade.make_room`). A full load runs on the first load, on a schema change (another model's
dimensions, new columns), and when most items are new (one streaming scan then beats many takes).

A snapshot keeps, per item, the pooled vector (float32), the token vectors quantised per ``token_store``
(:mod:`mmrag.store.cascade`), the dense text channel's vectors (:mod:`mmrag.store.dense`) and the metadata that
filters and hits are served from; the exact stage's multivectors and the texts are read by row id at the snapshot's
pinned table version (:meth:`Snapshot.fetch_rows`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmrag.store import schema as S
from mmrag.store.cascade import TokenStore, capacity, make_room
from mmrag.store.cascade import fill as _fill
from mmrag.store.cascade import fill_rows as _fill_rows
from mmrag.store.cascade import flat_multivectors as _flat_multivectors
from mmrag.store.cascade import multivectors as _multivectors
from mmrag.store.cascade import offsets as _offsets
from mmrag.store.cascade import ranges as _ranges
from mmrag.store.dense import TextVectors
from mmrag.store.filters import SearchFilters
from mmrag.store.hits import Hit
from mmrag.store.search_config import SearchError, SearchIndexConfig

log = logging.getLogger(__name__)

#: Metadata columns kept in RAM for every visible item (filters and hits are served from them).
META = ["id", "collection", "doc_id", "source_uri", "modality", "page", "start_s", "end_s"]
HIT_COLUMNS = [*META, "text"]


class Codes:
    """A string column dictionary-encoded: ``codes[i]`` indexes ``values``; ``index`` maps value -> code."""

    def __init__(self, column: pa.ChunkedArray | pa.Array | Sequence[str]) -> None:
        arr = column if isinstance(column, pa.ChunkedArray | pa.Array) else pa.array(list(column), pa.string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
        enc = arr.dictionary_encode()
        self.codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        self.values: list[str] = enc.dictionary.to_pylist()
        self.index = {v: i for i, v in enumerate(self.values)}

    def mask(self, wanted: Sequence[str]) -> np.ndarray:
        codes = [self.index[v] for v in wanted if v in self.index]
        if not codes:
            return np.zeros(len(self.codes), dtype=bool)
        if len(codes) == 1:
            return self.codes == codes[0]
        return np.isin(self.codes, np.asarray(codes, dtype=np.int32))

    def __getitem__(self, i: int) -> str:
        return self.values[self.codes[i]]

    def updated(self, n: int, kept: np.ndarray, src: np.ndarray, fresh: np.ndarray, values: Sequence[str]) -> Codes:
        """A new snapshot's column: row ``kept[j]`` has this one's row ``src[j]``'s value, row ``fresh[j]`` has
        ``values[j]``. The dictionary only grows, until unused values pass half of it."""
        out = Codes.__new__(Codes)
        codes = np.empty(n, np.int32)
        codes[kept] = self.codes[src]
        vals, index = self.values, self.index
        added: list[int] = []
        for v in values:
            c = index.get(v)
            if c is None:
                if vals is self.values:
                    vals, index = list(vals), dict(index)
                c = index[v] = len(vals)
                vals.append(v)
            added.append(c)
        codes[fresh] = np.asarray(added, np.int32)
        live = np.bincount(codes, minlength=len(vals)) > 0 if n else np.zeros(len(vals), bool)
        if len(vals) > 64 and int(live.sum()) * 2 < len(vals):  # re-encode: removed documents' ids pile up
            remap = np.cumsum(live) - 1
            codes = remap[codes].astype(np.int32)
            vals = [v for v, keep in zip(vals, live, strict=True) if keep]
            index = {v: i for i, v in enumerate(vals)}
        out.codes, out.values, out.index = codes, vals, index
        return out


def float_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A nullable numeric column as float64 with NaN for null (NaN compares false, like SQL NULL)."""
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


@dataclass
class Snapshot:
    """Everything one search needs, immutable once built."""

    version: int | None
    table: Any | None  # LanceDB table pinned at ``version`` (None for array-backed indexes)
    has_fts: bool
    dim: int
    ids: list[str]
    id_row: dict[str, int]
    row_ids: np.ndarray | None  # LanceDB row ids at ``version``
    pooled: np.ndarray  # [n, dim] float32, L2-normalised
    collection: Codes
    modality: Codes
    doc_id: Codes
    source_uri: Codes
    page: np.ndarray  # float64, NaN where null
    start_s: np.ndarray
    end_s: np.ndarray
    tok_start: np.ndarray  # int64 [n]
    tok_len: np.ndarray  # int64 [n]; 0 = not visually searchable
    tokens: np.ndarray | None  # [capacity, dim] int8 / float16, or None; rows past ``tok_used`` unused
    tok_scale: np.ndarray | None  # float32 [capacity] (int8 only)
    exact: list[np.ndarray] | None = None  # array-backed: float32 multivectors
    texts: list[str | None] | None = None  # array-backed: item texts
    has_text: np.ndarray | None = None  # bool [n]: the item has text for BM25 (None: unknown, assume yes)
    text: TextVectors | None = None  # dense text channel (None: the store has no text vectors)
    has_text_ann: bool = False  # the table at ``version`` has a vector index on ``text_vector``
    tok_used: int = 0  # high-water mark in ``tokens`` (the arena a later snapshot appends to)
    schema: pa.Schema | None = None  # the table's schema at ``version``: another one means a full load
    id_array: pa.Array | None = None  # ``ids`` as Arrow strings, for the next refresh's diff
    loaded: dict[str, Any] = field(default_factory=dict)  # how it was built: mode, rows added / kept / removed

    @property
    def n(self) -> int:
        return len(self.ids)

    def nbytes(self) -> dict[str, int]:
        out = {
            "pooled": self.pooled.nbytes,
            "tokens": 0 if self.tokens is None else self.tokens[: self.tok_used].nbytes,
            "token_scales": 0 if self.tok_scale is None else self.tok_scale[: self.tok_used].nbytes,
            "offsets": self.tok_start.nbytes + self.tok_len.nbytes,
            "metadata": sum(a.nbytes for a in (self.page, self.start_s, self.end_s, *(c.codes for c in self._codes()))),
        }
        if self.exact is not None:
            out["exact_multivectors"] = sum(m.nbytes for m in self.exact)
        if self.text is not None:
            out["text_vectors"] = self.text.nbytes
        return out

    def _codes(self) -> tuple[Codes, ...]:
        return (self.collection, self.modality, self.doc_id, self.source_uri)

    def mask(self, f: SearchFilters) -> np.ndarray:
        m = self.collection.mask([f.collection])
        if f.modalities is not None:
            m &= self.modality.mask(f.modalities)
        if f.doc_ids is not None:
            m &= self.doc_id.mask(f.doc_ids)
        if f.source_uris is not None:
            m &= self.source_uri.mask(f.source_uris)
        with np.errstate(invalid="ignore"):
            if f.page_min is not None:
                m &= self.page >= f.page_min
            if f.page_max is not None:
                m &= self.page <= f.page_max
            if f.time_min_s is not None:
                m &= self.end_s >= f.time_min_s
            if f.time_max_s is not None:
                m &= self.start_s <= f.time_max_s
        return m

    def hit(self, row: int, score: float, stage_scores: dict[str, float], text: str | None, snippet: int) -> Hit:
        page, s0, s1 = self.page[row], self.start_s[row], self.end_s[row]
        return Hit(
            id=self.ids[row],
            score=float(score),
            modality=self.modality[row],
            collection=self.collection[row],
            doc_id=self.doc_id[row],
            source_uri=self.source_uri[row],
            page=None if math.isnan(page) else int(page),
            start_s=None if math.isnan(s0) else float(s0),
            end_s=None if math.isnan(s1) else float(s1),
            text=(text or "")[:snippet],
            stage_scores=stage_scores,
            channels=self.channels_of(row),
        )

    def channels_of(self, row: int) -> tuple[str, ...]:
        """The channels that can rank this item at all (fusion does not count a channel blind to it against it)."""
        out = ["visual"] if self.tok_len[row] > 0 else []
        if self.has_text is None or self.has_text[row]:
            out.append("bm25")
        if self.text is not None and self.text.count[row] > 0:
            out.append("dense")
        return tuple(out)

    def fetch_rows(self, rows: Sequence[int] | np.ndarray) -> dict[int, tuple[np.ndarray, str | None]]:
        """row -> (float32 multivector, text) for ``rows``, in one LanceDB take at the snapshot's version (or from
        the arrays given). Rows deleted meanwhile are absent."""
        rows = sorted({int(r) for r in rows})
        if not rows:
            return {}
        if self.exact is not None:
            return {r: (self.exact[r], self.texts[r] if self.texts else None) for r in rows}
        got = self.table.take_row_ids([int(self.row_ids[r]) for r in rows]).select(["id", "multivector", "text"])
        tbl = got.to_arrow()
        out: dict[int, tuple[np.ndarray, str | None]] = {}
        for i, m, t in zip(
            tbl.column("id").to_pylist(),
            _multivectors(tbl.column("multivector"), self.dim),
            tbl.column("text").to_pylist(),
            strict=True,
        ):
            row = self.id_row.get(i)
            if row is not None:
                out[row] = (m, t)
        return out

    def fetch_texts(self, rows: Sequence[int]) -> dict[int, str | None]:
        """row -> text for ``rows`` (one LanceDB take at the snapshot's version, or the arrays given)."""
        rows = sorted({int(r) for r in rows})
        if self.texts is not None:
            return {r: self.texts[r] for r in rows}
        if self.table is None:
            return {}
        got = self.table.take_row_ids([int(self.row_ids[r]) for r in rows]).select(["id", "text"]).to_arrow()
        out: dict[int, str | None] = {}
        for i, t in zip(got.column("id").to_pylist(), got.column("text").to_pylist(), strict=True):
            row = self.id_row.get(i)
            if row is not None:
                out[row] = t
        return out


def channels(snap: Snapshot | None) -> list[str]:
    """The channels ``snap`` can serve: ``visual`` (always), ``bm25``, ``dense``."""
    out = ["visual"]
    if snap is not None and snap.table is not None and snap.has_fts:
        out.append("bm25")
    if snap is not None and snap.text is not None and bool(snap.text.count.any()):
        out.append("dense")
    return out


def _visible() -> str:
    from lancedb.expr import col, lit

    return (col("visible") == lit(True)).to_sql()


def load_snapshot(
    table: Any, version: int, old: Snapshot | None, config: SearchIndexConfig, *, incremental: bool = True
) -> Snapshot:
    """A snapshot of the visible items of ``table`` (pinned at ``version``): built from ``old`` plus what changed
    (:func:`update_snapshot`) when it can be, else loaded in full, reusing ``old``'s tokens and text vectors for the
    ids it holds (an item id is a hash of its content)."""
    if incremental and old is not None:
        snap = update_snapshot(table, version, old, config)
        if snap is not None:
            return snap
    schema = table.schema
    dim = schema.field("pooled").type.list_size
    visible = _visible()
    meta = (
        table.search()
        .where(visible)
        .select([*META, "pooled", "n_tokens", "text_source"])
        .with_row_id(True)
        .limit(None)
        .to_arrow()
    )
    n = meta.num_rows
    pooled_col = meta.column("pooled").combine_chunks() if n else None
    if n and pooled_col.null_count:
        pooled_col = pooled_col.fill_null(pa.scalar([0.0] * dim, pooled_col.type))
    pooled = (
        pooled_col.values.to_numpy(zero_copy_only=False).reshape(n, dim).astype(np.float32, copy=False)
        if n
        else np.zeros((0, dim), np.float32)
    )
    row_ids = meta.column("_rowid").to_numpy()
    n_tokens = np.nan_to_num(float_column(meta.column("n_tokens"))).astype(np.int64)
    indices = table.list_indices()
    has_fts = any(getattr(i, "columns", None) == ["text"] for i in indices)
    has_text_ann = any(getattr(i, "columns", None) == [S.TEXT_VECTOR] for i in indices)

    ids = meta.column("id").to_pylist()
    reuse: dict[int, int] = {}
    if old is not None and old.tokens is not None and config.token_store != "none":
        reuse = {r: o for r, o in ((r, old.id_row.get(i)) for r, i in enumerate(ids)) if o is not None}

    def fetch(rows: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        want = {ids[r]: r for r in rows}

        def batch_rows(got: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            where = [want.get(i, -1) for i in got.column(0).to_pylist()]
            at = np.asarray(where, np.int64)
            flat, lens = _flat_multivectors(got.column(1), dim)
            if (at < 0).any():  # rows whose tokens were reused from the old snapshot
                keep = at >= 0
                flat, lens, at = flat[_ranges(_offsets(lens)[keep], lens[keep])], lens[keep], at[keep]
            return at, flat, lens

        if len(rows) > 0.5 * n:  # mostly new: one streaming scan beats many takes
            reader = (
                table.search()
                .where(visible)
                .select(["id", "multivector"])
                .limit(None)
                .to_batches(config.load_batch_rows)
            )
            for batch in reader:
                yield batch_rows(batch)
            return
        step = config.fetch_chunk_rows
        for s in range(0, len(rows), step):
            chunk = rows[s : s + step]
            yield batch_rows(
                table.take_row_ids([int(row_ids[r]) for r in chunk]).select(["id", "multivector"]).to_arrow()
            )

    snap = build_snapshot(meta, pooled, dim, row_ids, n_tokens, reuse, fetch, old, config.token_store)
    snap.version, snap.table, snap.has_fts, snap.has_text_ann = version, table, has_fts, has_text_ann
    snap.has_text = np.asarray([t is not None for t in meta.column("text_source").to_pylist()], dtype=bool)
    tdim = S.text_dim_of(schema)
    if tdim:
        snap.text = _load_text(table, visible, ids, tdim, old, config)
    snap.schema = schema
    id_array = meta.column("id").combine_chunks() if n else pa.array([], pa.string())
    snap.id_array = id_array if len(snap.id_row) == n else None  # duplicate ids: the next refresh loads in full
    snap.loaded = {"mode": "full", "rows": n, "reused": len(reuse)}
    return snap


def update_snapshot(table: Any, version: int, old: Snapshot, config: SearchIndexConfig) -> Snapshot | None:
    """``old`` brought to ``table``'s pinned ``version`` by reading only what changed, or None when that cannot be
    done safely (the caller then loads in full).

    Reads the ``id`` column of the visible rows with their row ids (the one pass over every row: ~33 bytes each),
    then the new rows (and rows that had no text vectors and have them now), by row id. Rows are in the order a full
    load would give them.
    """
    schema = table.schema
    if old.table is None or old.id_array is None or old.schema is None or not schema.equals(old.schema):
        return None
    if old.has_text is None or (S.text_dim_of(schema) is not None) != (old.text is not None):
        return None
    dim = old.dim
    # rows published without dense text vectors (ingestor.text_after_publish) get them in a later version, under the
    # same ids and often the same row ids (LanceDB rewrites a column in place): ``text_model_id`` tells them apart
    lacking = old.text is not None and bool((old.text.count == 0).any()) and "text_model_id" in schema.names
    scan_cols = ["id", "text_model_id"] if lacking else ["id"]
    scan = table.search().where(_visible()).select(scan_cols).with_row_id(True).limit(None).to_arrow()
    n = scan.num_rows
    ids_arr = scan.column("id").combine_chunks() if n else pa.array([], pa.string())
    if ids_arr.null_count or (n and pc.count_distinct(ids_arr).as_py() != n):
        return None
    row_ids = scan.column("_rowid").to_numpy()
    at = pc.index_in(ids_arr, value_set=old.id_array)
    known = at.is_valid().to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
    if lacking and known.any():  # a row that had no text vectors and has a text model now is read again
        assert old.text is not None
        was = at.filter(known).to_numpy(zero_copy_only=False).astype(np.int64)
        now = scan.column("text_model_id").is_valid().to_numpy(zero_copy_only=False)[known]
        known[np.flatnonzero(known)[(old.text.count[was] == 0) & now]] = False
    kept = np.flatnonzero(known)
    src = at.filter(known).to_numpy(zero_copy_only=False).astype(np.int64) if len(kept) else np.zeros(0, np.int64)
    fresh = np.flatnonzero(~known)
    if len(fresh) > config.incremental_max_new * n and len(fresh) > config.fetch_chunk_rows:
        return None  # mostly new: the full load streams them in one scan

    tdim = old.text.dim if old.text is not None else 0
    cols = [*META, "pooled", "n_tokens", "text_source"]
    if config.token_store != "none":
        cols.append("multivector")
    if tdim:
        cols += ["text_vectors", "text_vector"]
    metas: list[pa.Table] = []
    toks: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}  # fresh position -> quantised tokens
    mismatched = 0
    windows: list[tuple[int, np.ndarray | None, np.ndarray | None]] = []  # (row, windows, mean)
    fresh_ids = ids_arr.take(pa.array(fresh, pa.int64())) if len(fresh) else pa.array([], pa.string())
    step = config.fetch_chunk_rows
    for s in range(0, len(fresh), step):
        got = table.take_row_ids([int(r) for r in row_ids[fresh[s : s + step]]]).select(cols).to_arrow()
        pos = pc.index_in(fresh_ids[s : s + step], value_set=got.column("id"))
        if pos.null_count or got.num_rows != len(pos):
            return None  # a row id that does not resolve at this pinned version: not provably right
        got = got.take(pos)
        if "multivector" in cols:  # quantised now: a big append holds int8 here, not float32
            want = np.maximum(np.nan_to_num(float_column(got.column("n_tokens"))).astype(np.int64), 0)
            for j, mv in enumerate(_multivectors(got.column("multivector"), dim)):
                w = int(want[j])
                if w:
                    t = np.empty((w, dim), np.int8 if config.token_store == "int8" else np.float16)
                    sc = np.empty(w, np.float32) if config.token_store == "int8" else None
                    mismatched += _fill(t, sc, 0, w, mv, config.token_store)
                    toks[s + j] = (t, sc)
        if tdim:
            means = got.column("text_vector").combine_chunks()
            for j, w in enumerate(_multivectors(got.column("text_vectors"), tdim)):
                m = means[j]
                mean = None if not m.is_valid else np.asarray(m.values.to_numpy(), np.float32)
                windows.append((int(fresh[s + j]), w.copy() if len(w) else None, mean))
        metas.append(got.select([*META, "pooled", "n_tokens", "text_source"]))
    new = pa.concat_tables(metas) if metas else None

    pooled = np.empty((n, dim), np.float32)
    pooled[kept] = old.pooled[src]
    tok_len = np.zeros(n, np.int64)
    tok_len[kept] = old.tok_len[src]
    page, start_s, end_s = (np.empty(n, np.float64) for _ in range(3))
    for arr, o in ((page, old.page), (start_s, old.start_s), (end_s, old.end_s)):
        arr[kept] = o[src]
    has_text = np.zeros(n, bool)
    has_text[kept] = old.has_text[src]
    if new is not None:
        pcol = new.column("pooled").combine_chunks()
        if pcol.null_count:
            pcol = pcol.fill_null(pa.scalar([0.0] * dim, pcol.type))
        pooled[fresh] = pcol.values.to_numpy(zero_copy_only=False).reshape(len(fresh), dim)
        tok_len[fresh] = np.maximum(np.nan_to_num(float_column(new.column("n_tokens"))).astype(np.int64), 0)
        for arr, name in ((page, "page"), (start_s, "start_s"), (end_s, "end_s")):
            arr[fresh] = float_column(new.column(name))
        has_text[fresh] = np.asarray([t is not None for t in new.column("text_source").to_pylist()], bool)

    def codes(name: str) -> Codes:
        old_codes: Codes = getattr(old, name)
        values = new.column(name).to_pylist() if new is not None else []
        return old_codes.updated(n, kept, src, fresh, values)

    tokens, scales, tok_used = old.tokens, old.tok_scale, old.tok_used
    tok_start = np.zeros(n, np.int64)
    tok_start[kept] = old.tok_start[src]
    if tokens is not None:
        placed = fresh[tok_len[fresh] > 0]
        tokens, scales, tok_start, tok_used = make_room(tokens, scales, tok_used, tok_start, tok_len, placed)
        for j, (t, sc) in toks.items():
            st = int(tok_start[fresh[j]])
            tokens[st : st + len(t)] = t
            if scales is not None:
                scales[st : st + len(t)] = sc
        if mismatched:
            log.warning("%d items have n_tokens unequal to their multivector's length; token stage pads", mismatched)

    ids = ids_arr.to_pylist()
    snap = Snapshot(
        version=version,
        table=table,
        has_fts=False,
        dim=dim,
        ids=ids,
        id_row={i: r for r, i in enumerate(ids)},
        row_ids=row_ids,
        pooled=pooled,
        collection=codes("collection"),
        modality=codes("modality"),
        doc_id=codes("doc_id"),
        source_uri=codes("source_uri"),
        page=page,
        start_s=start_s,
        end_s=end_s,
        tok_start=tok_start,
        tok_len=tok_len,
        tokens=tokens,
        tok_scale=scales,
        has_text=has_text,
        tok_used=tok_used,
        schema=schema,
        id_array=ids_arr,
    )
    indices = table.list_indices()
    snap.has_fts = any(getattr(i, "columns", None) == ["text"] for i in indices)
    snap.has_text_ann = any(getattr(i, "columns", None) == [S.TEXT_VECTOR] for i in indices)
    if old.text is not None:
        snap.text = old.text.updated(n, kept, src, windows)
    snap.loaded = {"mode": "incremental", "rows": n, "added": len(fresh), "removed": old.n - len(kept)}
    return snap


def _load_text(
    table: Any, visible: str, ids: list[str], tdim: int, old: Snapshot | None, config: SearchIndexConfig
) -> TextVectors:
    """The dense channel's vectors: copied from the old snapshot for known ids, else one streaming read."""
    n = len(ids)
    reuse: dict[int, int] = {}
    if old is not None and old.text is not None and old.text.dim == tdim:
        reuse = {r: o for r, o in ((r, old.id_row.get(i)) for r, i in enumerate(ids)) if o is not None}
    id_row = {i: r for r, i in enumerate(ids)}

    def rows() -> Iterator[tuple[int, np.ndarray | None, np.ndarray | None]]:
        if len(reuse) == n:
            return
        reader = (
            table.search()
            .where(visible)
            .select(["id", "text_vectors", "text_vector"])
            .limit(None)
            .to_batches(config.load_batch_rows)
        )
        for batch in reader:
            got = batch.column(0).to_pylist()
            wins = _multivectors(batch.column(1), tdim)
            means = batch.column(2)
            for j, (i, w) in enumerate(zip(got, wins, strict=True)):
                r = id_row.get(i)
                if r is None or r in reuse or not len(w):
                    continue
                m = means[j]
                yield r, w, (None if not m.is_valid else np.asarray(m.values.to_numpy(), np.float32))

    return TextVectors.build(n, tdim, rows(), reuse, old.text if old is not None else None)


def build_snapshot(
    meta: pa.Table,
    pooled: np.ndarray,
    dim: int,
    row_ids: np.ndarray | None,
    n_tokens: np.ndarray,
    reuse: dict[int, int],
    fetch: Any,
    old: Snapshot | None,
    store: TokenStore,
) -> Snapshot:
    """Assemble a snapshot; ``reuse`` maps new row -> old row whose tokens are copied, not re-read; ``fetch(rows)``
    yields ``(rows, multivectors end to end, their lengths)`` batches for the others."""
    ids = meta.column("id").to_pylist()
    n = len(ids)
    tok_len = np.maximum(np.asarray(n_tokens, np.int64), 0)
    if reuse and old is not None:
        new_rows = np.fromiter(reuse.keys(), np.int64, len(reuse))
        old_rows = np.fromiter(reuse.values(), np.int64, len(reuse))
        tok_len[new_rows] = old.tok_len[old_rows]  # same id = same content = same tokens
    tok_start = np.zeros(n, np.int64)
    if n:
        tok_start[1:] = np.cumsum(tok_len)[:-1]
    tokens = scales = None
    total = int(tok_len.sum())
    if store != "none":
        tokens = np.empty((capacity(total), dim), np.int8 if store == "int8" else np.float16)
        scales = np.empty(len(tokens), np.float32) if store == "int8" else None
        if reuse and old is not None:
            dst = _ranges(tok_start[new_rows], tok_len[new_rows])
            src = _ranges(old.tok_start[old_rows], tok_len[new_rows])
            tokens[dst] = old.tokens[src]
            if scales is not None:
                scales[dst] = old.tok_scale[src]
        missing = [r for r in range(n) if r not in reuse and tok_len[r] > 0]
        seen = np.zeros(n, bool)
        mismatched = 0
        for rows, flat, lens in fetch(missing):
            mismatched += _fill_rows(tokens, scales, tok_start, tok_len, rows, flat, lens, store)
            seen[rows] = True
        lost = [r for r in missing if not seen[r]]
        if lost:  # rows that vanished between reads of one pinned version cannot happen; stay searchable-safe
            tok_len[lost] = 0
        if mismatched:
            log.warning("%d items have n_tokens unequal to their multivector's length; token stage pads", mismatched)
    return Snapshot(
        version=None,
        table=None,
        has_fts=False,
        dim=dim,
        ids=ids,
        id_row={i: r for r, i in enumerate(ids)},
        row_ids=row_ids,
        pooled=np.array(pooled, dtype=np.float32, order="C"),  # a writable copy (Arrow buffers are read-only)
        collection=Codes(meta.column("collection")),
        modality=Codes(meta.column("modality")),
        doc_id=Codes(meta.column("doc_id")),
        source_uri=Codes(meta.column("source_uri")),
        page=float_column(meta.column("page")),
        start_s=float_column(meta.column("start_s")),
        end_s=float_column(meta.column("end_s")),
        tok_start=tok_start,
        tok_len=tok_len,
        tokens=tokens,
        tok_scale=scales,
        tok_used=total if tokens is not None else 0,
    )


def array_snapshot(
    ids: Sequence[str],
    multivectors: Sequence[np.ndarray],
    *,
    collection: str | Sequence[str],
    modality: str | Sequence[str],
    doc_ids: Sequence[str] | None,
    source_uris: Sequence[str] | None,
    pages: Sequence[int | None] | None,
    texts: Sequence[str | None] | None,
    pooled: np.ndarray | None,
    text_vectors: Sequence[np.ndarray | None] | None,
    token_store: TokenStore,
) -> Snapshot:
    """A snapshot of items given as arrays (no LanceDB): see :meth:`mmrag.store.search.SearchIndex.from_arrays`."""
    n = len(ids)
    if len(multivectors) != n:
        raise SearchError(f"{len(multivectors)} multivectors for {n} ids")
    mvs = [np.ascontiguousarray(m, dtype=np.float32) for m in multivectors]
    dim = mvs[0].shape[1] if mvs else 0
    if pooled is None and n:  # as ingestion writes it: the L2-normalised mean of the tokens
        pooled = np.stack([m.mean(0) if len(m) else np.zeros(dim, np.float32) for m in mvs])
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    pooled = np.zeros((0, dim), np.float32) if pooled is None else np.asarray(pooled, dtype=np.float32)

    def col(v: Any, default: Any) -> list[Any]:
        if v is None:
            return [default(i) for i in range(n)]
        return [v] * n if isinstance(v, str) else list(v)

    meta = pa.table(
        {
            "id": pa.array(list(ids), pa.string()),
            "collection": pa.array(col(collection, None), pa.string()),
            "doc_id": pa.array(col(doc_ids, lambda i: ids[i]), pa.string()),
            "source_uri": pa.array(col(source_uris, lambda i: ids[i]), pa.string()),
            "modality": pa.array(col(modality, None), pa.string()),
            "page": pa.array(col(pages, lambda i: None), pa.int32()),
            "start_s": pa.array([None] * n, pa.float64()),
            "end_s": pa.array([None] * n, pa.float64()),
        }
    )
    lens = np.array([len(m) for m in mvs], np.int64)

    def fetch(rows: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if rows:
            yield np.asarray(rows, np.int64), np.concatenate([mvs[r] for r in rows]), lens[rows]

    snap = build_snapshot(meta, pooled, dim, None, lens, {}, fetch, None, token_store)
    snap.exact = mvs
    if texts is not None:
        snap.has_text = np.asarray([bool(t) for t in texts], dtype=bool)
    snap.texts = list(texts) if texts is not None else [None] * n
    if text_vectors is not None:
        if len(text_vectors) != n:
            raise SearchError(f"{len(text_vectors)} text vector lists for {n} ids")
        tdim = next((len(v[0]) for v in text_vectors if v is not None and len(v)), 0)
        snap.text = TextVectors.build(n, tdim, ((r, v, None) for r, v in enumerate(text_vectors)))
    return snap


__all__ = [
    "HIT_COLUMNS",
    "META",
    "Codes",
    "Snapshot",
    "array_snapshot",
    "build_snapshot",
    "channels",
    "float_column",
    "load_snapshot",
    "update_snapshot",
]
