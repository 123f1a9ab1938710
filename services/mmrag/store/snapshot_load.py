"""Loading the search index's snapshot from LanceDB: in full, or incrementally from the previous one.

A refresh is incremental (:func:`update_snapshot`): it reads the ``id`` column of the visible rows (with their row
ids), keeps what the old snapshot holds for the ids still there, and fetches only the new ids' rows by row id. An
item id is a hash of its content, so a known id never needs re-reading, and a compaction that moved rows only changes
their row ids, which that scan reads anyway. The token vectors and text windows live in flat arenas shared with the
old snapshot: new items' vectors are written past the old snapshot's high-water mark, where no reader of it looks
(:func:`mmrag.store.cascade.make_room`). A full load (:func:`load_snapshot`) runs on the first load, on a schema change
(another model's dimensions, new columns), and when most items are new (one streaming scan then beats many takes).

With an int8 token store the tokens come from the items' stored int8 copies (:mod:`mmrag.store.tokens`), not from
their float32 multivectors: a new replica reads about a quarter of the bytes and quantises nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmrag.store import schema as S
from mmrag.store import tokens as token_copies
from mmrag.store.arena import RAM, Arena
from mmrag.store.cascade import TokenStore, capacity, make_room
from mmrag.store.cascade import fill as _fill
from mmrag.store.cascade import fill_rows as _fill_rows
from mmrag.store.cascade import flat_multivectors as _flat_multivectors
from mmrag.store.cascade import multivectors as _multivectors
from mmrag.store.cascade import offsets as _offsets
from mmrag.store.cascade import ranges as _ranges
from mmrag.store.dense import TextVectors
from mmrag.store.search_config import SearchError, SearchIndexConfig
from mmrag.store.shards import keep_shard
from mmrag.store.snapshot import META, Codes, Fetched, Snapshot, float_column

log = logging.getLogger(__name__)


def arena_of(config: SearchIndexConfig) -> Arena:
    """Where ``config`` puts the token arenas: RAM, or memory-mapped files under ``token_dir``."""
    return RAM if config.token_tier == "ram" else Arena("disk", config.token_dir)


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
    meta = keep_shard(meta, config.shard_index, config.shard_count)  # retriever.shards: this shard's items only
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

    copies = config.token_store == "int8" and token_copies.has_copies(schema)

    def fetch(rows: list[int]) -> Iterator[Fetched]:
        want = {ids[r]: r for r in rows}
        no_copy: list[int] = []  # rows written before the int8 copies existed: from their multivectors

        def batch_rows(got: pa.Table | pa.RecordBatch) -> Fetched:
            at = np.asarray([want.get(i, -1) for i in got.column(0).to_pylist()], np.int64)
            sc = None
            if got.num_columns == 3:  # id, tokens_i8, token_scales
                flat, sc, lens, ok = token_copies.decode(got.column(1), got.column(2), dim)
                no_copy.extend(int(r) for r in at[~ok & (at >= 0)])
                at = at[ok]
            else:
                flat, lens = _flat_multivectors(got.column(1), dim)
            if (at < 0).any():  # rows whose tokens were reused from the old snapshot
                keep = at >= 0
                picked = _ranges(_offsets(lens)[keep], lens[keep])
                flat, lens, at = flat[picked], lens[keep], at[keep]
                sc = sc[picked] if sc is not None else None
            return at, flat, lens, sc

        cols = ["id", token_copies.TOKENS, token_copies.SCALES] if copies else ["id", "multivector"]
        if len(rows) > 0.5 * n:  # mostly new: one streaming scan beats many takes
            reader = table.search().where(visible).select(cols).limit(None).to_batches(config.load_batch_rows)
            for batch in reader:
                yield batch_rows(batch)
        else:
            for s in range(0, len(rows), config.fetch_chunk_rows):
                chunk = rows[s : s + config.fetch_chunk_rows]
                yield batch_rows(table.take_row_ids([int(row_ids[r]) for r in chunk]).select(cols).to_arrow())
        for s in range(0, len(no_copy), config.fetch_chunk_rows):
            chunk = no_copy[s : s + config.fetch_chunk_rows]
            got = table.take_row_ids([int(row_ids[r]) for r in chunk]).select(["id", "multivector"]).to_arrow()
            yield batch_rows(got)

    snap = build_snapshot(
        meta,
        pooled,
        dim,
        row_ids,
        n_tokens,
        reuse,
        fetch,
        old,
        config.token_store,
        alloc=arena_of(config),
        pooled_store=config.pooled_store,
    )
    snap.version, snap.table, snap.has_fts, snap.has_text_ann = version, table, has_fts, has_text_ann
    snap.has_text = np.asarray([t is not None for t in meta.column("text_source").to_pylist()], dtype=bool)
    tdim = S.text_dim_of(schema)
    if tdim:
        snap.text = _load_text(table, visible, ids, tdim, old, config)
    snap.schema = schema
    id_array = meta.column("id").combine_chunks() if n else pa.array([], pa.string())
    snap.id_array = id_array if len(snap.id_row) == n else None  # duplicate ids: the next refresh loads in full
    snap.loaded = {"mode": "full", "rows": n, "reused": len(reuse), **snap.loaded}
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
    scan = keep_shard(scan, config.shard_index, config.shard_count)
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
    copies = config.token_store == "int8" and token_copies.has_copies(schema)
    if config.token_store != "none":
        cols += [token_copies.TOKENS, token_copies.SCALES] if copies else ["multivector"]
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
        if config.token_store != "none":  # quantised now: a big append holds int8 here, not float32
            want = np.maximum(np.nan_to_num(float_column(got.column("n_tokens"))).astype(np.int64), 0)
            got_row_ids = row_ids[fresh[s : s + step]]
            for j, v, vs in _fresh_tokens(table, got, got_row_ids, dim, want, copies):
                w = int(want[j])
                if vs is not None and len(v) == w:  # the stored int8 copy, as it is
                    toks[s + j] = (v.copy(), vs.copy())
                    continue
                mv = v.astype(np.float32) * vs[:, None] if vs is not None else v
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

    pooled = np.empty((n, dim), config.pooled_store)
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
        tokens, scales, tok_start, tok_used = make_room(
            tokens, scales, tok_used, tok_start, tok_len, placed, arena_of(config)
        )
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


def _fresh_tokens(
    table: Any, got: pa.Table, got_row_ids: np.ndarray, dim: int, want: np.ndarray, copies: bool
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """``(row in got, vectors, scales)`` for the rows of ``got`` that have tokens: their int8 copies and scales where
    ``copies`` and they have one, else their float32 multivectors and None (read here, by row id, for rows written
    before the copies existed)."""
    if not copies:
        for j, mv in enumerate(_multivectors(got.column("multivector"), dim)):
            if want[j]:
                yield j, mv, None
        return
    q, sc, lens, ok = token_copies.decode(got.column(token_copies.TOKENS), got.column(token_copies.SCALES), dim)
    starts = _offsets(lens)
    for k, j in enumerate(np.flatnonzero(ok).tolist()):
        if want[j]:
            yield j, q[starts[k] : starts[k] + lens[k]], sc[starts[k] : starts[k] + lens[k]]
    old_rows = [j for j in np.flatnonzero(~ok).tolist() if want[j]]
    if not old_rows:
        return
    mv_rows = table.take_row_ids([int(got_row_ids[j]) for j in old_rows]).select(["id", "multivector"]).to_arrow()
    at = {i: k for k, i in enumerate(mv_rows.column("id").to_pylist())}
    mvs = _multivectors(mv_rows.column("multivector"), dim)
    ids = got.column("id").to_pylist()
    for j in old_rows:
        k = at.get(ids[j])
        if k is not None:
            yield j, mvs[k], None


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
    *,
    alloc: Arena = RAM,
    pooled_store: str = "float32",
) -> Snapshot:
    """Assemble a snapshot; ``reuse`` maps new row -> old row whose tokens are copied, not re-read; ``fetch(rows)``
    yields :data:`Fetched` batches for the others (multivectors, or int8 copies with their scales); ``alloc`` makes the
    token arenas (in RAM, or memory-mapped on disk); ``pooled_store`` is the pooled vectors' dtype."""
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
    from_source: dict[str, int] = {}  # rows' tokens read from the int8 copies / quantised from multivectors
    if store != "none":
        tokens = alloc((capacity(total), dim), np.int8 if store == "int8" else np.float16)
        scales = alloc((len(tokens),), np.float32) if store == "int8" else None
        if reuse and old is not None:
            dst = _ranges(tok_start[new_rows], tok_len[new_rows])
            src = _ranges(old.tok_start[old_rows], tok_len[new_rows])
            tokens[dst] = old.tokens[src]
            if scales is not None:
                scales[dst] = old.tok_scale[src]
        missing = [r for r in range(n) if r not in reuse and tok_len[r] > 0]
        seen = np.zeros(n, bool)
        mismatched = 0
        for rows, flat, lens, flat_scales in fetch(missing):
            mismatched += _fill_rows(tokens, scales, tok_start, tok_len, rows, flat, lens, store, flat_scales)
            seen[rows] = True
            if len(rows):
                source = "int8_copies" if flat_scales is not None else "multivectors"
                from_source[source] = from_source.get(source, 0) + len(rows)
        lost = [r for r in missing if not seen[r]]
        if lost:  # rows that vanished between reads of one pinned version cannot happen; stay searchable-safe
            tok_len[lost] = 0
        if mismatched:
            log.warning("%d items have n_tokens unequal to their multivector's length; token stage pads", mismatched)
    snap = Snapshot(
        version=None,
        table=None,
        has_fts=False,
        dim=dim,
        ids=ids,
        id_row={i: r for r, i in enumerate(ids)},
        row_ids=row_ids,
        pooled=np.array(pooled, dtype=pooled_store, order="C"),  # a writable copy (Arrow buffers are read-only)
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
    snap.loaded = {"tokens_from": from_source}
    return snap


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
    pooled_store: str = "float32",
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

    def fetch(rows: list[int]) -> Iterator[Fetched]:
        if rows:
            yield np.asarray(rows, np.int64), np.concatenate([mvs[r] for r in rows]), lens[rows], None

    snap = build_snapshot(meta, pooled, dim, None, lens, {}, fetch, None, token_store, pooled_store=pooled_store)
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


__all__ = ["arena_of", "array_snapshot", "build_snapshot", "load_snapshot", "update_snapshot"]
