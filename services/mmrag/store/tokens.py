"""The int8 copy of each item's token vectors, stored beside its float32 multivector.

The search index holds every visible item's tokens in RAM quantised to int8 with a per-token scale (the cascade's
token stage scores ~1,500 candidates per query, :mod:`mmrag.store.cascade`). Quantising needs the float32
multivector, so a new retriever replica used to read every full vector at start (~4.4 GB at 100k items). Items are
now written with their tokens already quantised exactly as the index quantises them:

``tokens_i8``     the ``n_tokens x dim`` int8 values end to end (``list<int8>``)
``token_scales``  one float32 scale per token (``list<float32>``)

and a replica whose index is int8 (``search.token_store``) reads those instead: ~a quarter of the bytes, nothing to
quantise. The exact stage still reads the float32 multivectors of its few survivors per query. Rows written before
these columns existed (null there) are read from ``multivector`` as before; :func:`fill_copies` (run by ``mmrag store
optimize`` and after ingestion) gives them their copies.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from mmrag.store import schema as S
from mmrag.store.cascade import FILL_BLOCK, flat_multivectors, quantise, ranges

log = logging.getLogger(__name__)

TOKENS = S.TOKENS_I8
SCALES = S.TOKEN_SCALES
FIELDS = S.TOKEN_FIELDS
#: int8 values per encoded chunk: list<int8> offsets are int32
_CHUNK_VALUES = 1 << 30


def has_copies(schema: pa.Schema) -> bool:
    return TOKENS in schema.names and SCALES in schema.names


def encode(multivector: pa.ChunkedArray | pa.Array, dim: int) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """``tokens_i8`` and ``token_scales`` for a ``multivector`` column (null where it is null)."""
    arr = multivector.combine_chunks() if isinstance(multivector, pa.ChunkedArray) else multivector
    lens_all = np.diff(arr.offsets.to_numpy()).astype(np.int64) if len(arr) else np.zeros(0, np.int64)
    bounds, acc = [0], 0
    for i, length in enumerate(lens_all.tolist()):
        if acc and acc + length * dim >= _CHUNK_VALUES:
            bounds.append(i)
            acc = 0
        acc += length * dim
    bounds.append(len(arr))
    tok_chunks: list[pa.Array] = []
    scale_chunks: list[pa.Array] = []
    for start, stop in itertools.pairwise(bounds):
        part = arr.slice(start, stop - start)
        flat, lens = flat_multivectors(part, dim)
        q = np.empty(flat.shape, np.int8)
        sc = np.empty(len(flat), np.float32)
        for b in range(0, len(flat), FILL_BLOCK):
            e = min(len(flat), b + FILL_BLOCK)
            q[b:e], sc[b:e] = quantise(flat[b:e], "int8")  # type: ignore[misc]
        offs = np.zeros(len(lens) + 1, np.int64)
        offs[1:] = np.cumsum(lens)
        mask = pa.array(np.asarray(part.is_null())) if part.null_count else None
        tok_chunks.append(
            pa.ListArray.from_arrays(pa.array(offs * dim, pa.int32()), pa.array(q.reshape(-1)), mask=mask)
        )
        scale_chunks.append(pa.ListArray.from_arrays(pa.array(offs, pa.int32()), pa.array(sc), mask=mask))
    return pa.chunked_array(tok_chunks, FIELDS[0].type), pa.chunked_array(scale_chunks, FIELDS[1].type)


def with_copies(rows: pa.Table, dim: int) -> pa.Table:
    """``rows`` with their ``tokens_i8``/``token_scales`` computed from ``multivector`` (replacing null ones)."""
    if "multivector" not in rows.column_names or not rows.num_rows:
        return rows
    if TOKENS in rows.column_names and rows.column(TOKENS).null_count == 0:
        return rows
    toks, scales = encode(rows.column("multivector"), dim)
    for f, values in zip(FIELDS, (toks, scales), strict=True):
        if f.name in rows.column_names:
            rows = rows.set_column(rows.schema.get_field_index(f.name), f, values)
        else:
            rows = rows.append_column(f, values)
    return rows


def decode(
    tokens: pa.ChunkedArray | pa.Array, scales: pa.ChunkedArray | pa.Array, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows' stored copies as ``(int8 [total, dim], scales [total], lengths, ok)``: the arrays hold the rows where
    ``ok`` (a copy whose sizes agree) end to end; the other rows must be read from their multivector."""
    t = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    s = scales.combine_chunks() if isinstance(scales, pa.ChunkedArray) else scales
    n = len(t)
    if n == 0:
        return np.zeros((0, dim), np.int8), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    valid = np.asarray(t.is_valid()) & np.asarray(s.is_valid())
    if t.null_count:
        t = t.fill_null(pa.scalar([], t.type))
    if s.null_count:
        s = s.fill_null(pa.scalar([], s.type))
    toffs, soffs = t.offsets.to_numpy().astype(np.int64), s.offsets.to_numpy().astype(np.int64)
    tlen, slen = np.diff(toffs), np.diff(soffs)
    ok = valid & (tlen == slen * dim) & (slen > 0)
    tvals = t.values.to_numpy(zero_copy_only=False)
    svals = s.values.to_numpy(zero_copy_only=False)
    if ok.all():  # the rows' values lie end to end
        q = tvals[toffs[0] : toffs[-1]].reshape(-1, dim)
        sc = svals[soffs[0] : soffs[-1]]
        return q, sc, slen, ok
    keep = np.flatnonzero(ok)
    q = tvals[ranges(toffs[keep], tlen[keep])].reshape(-1, dim) if len(keep) else np.zeros((0, dim), np.int8)
    sc = svals[ranges(soffs[keep], slen[keep])] if len(keep) else np.zeros(0, np.float32)
    return q, sc, slen[keep], ok


def dequantise(q: np.ndarray, sc: np.ndarray) -> np.ndarray:
    """Back to float32; quantising the result gives ``q`` and ``sc`` again (each token's largest value is +-127)."""
    return q.astype(np.float32) * sc[:, None]


def fill_copies(table: Any, dim: int, *, batch_rows: int = 1024) -> int:
    """Give every row that has a multivector and no int8 copy its copy (a partial-column merge by ``id``; the
    float32 multivectors are read once); returns rows filled. Rows deleted meanwhile are skipped."""
    if not has_copies(table.schema):
        return 0
    where = f"{TOKENS} IS NULL AND multivector IS NOT NULL"
    if table.count_rows(where) == 0:
        return 0
    reader = table.search().where(where).select(["id", "multivector"]).limit(None).to_batches(batch_rows)
    want = pa.schema([pa.field("id", pa.string()), *FIELDS])
    filled = 0
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush() -> int:
        nonlocal pending, pending_rows
        if not pending:
            return 0
        rows = pa.concat_tables(pending)
        pending, pending_rows = [], 0
        out = table.merge_insert("id").when_matched_update_all().execute(rows)
        return int(getattr(out, "num_updated_rows", rows.num_rows))

    for batch in reader:
        toks, scales = encode(batch.column(1), dim)
        pending.append(pa.Table.from_arrays([batch.column(0), toks, scales], schema=want))
        pending_rows += batch.num_rows
        if pending_rows >= 8 * batch_rows:
            filled += flush()
    filled += flush()
    if filled:
        log.info("gave %d items their int8 token copies", filled)
    return filled


__all__ = ["FIELDS", "SCALES", "TOKENS", "decode", "dequantise", "encode", "fill_copies", "has_copies"]
