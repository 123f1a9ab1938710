"""The search index's in-memory snapshot: what it holds per visible item (:class:`Snapshot`).

A :class:`Snapshot` is immutable once built; :meth:`mmrag.store.search.SearchIndex.refresh` builds a new one
(:mod:`mmrag.store.snapshot_load`) and swaps it in, so searches running in other threads never see a half-built index.

A snapshot keeps, per item, the pooled vector (float16 or float32: ``pooled_store``), the token vectors quantised
per ``token_store`` (:mod:`mmrag.store.cascade`), the dense text channel's vectors (:mod:`mmrag.store.dense`)
and the metadata that filters and hits are served from; the exact stage's multivectors and the texts are read by
row id at the snapshot's pinned table version (:meth:`Snapshot.fetch_rows`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mmrag.store.arena import on_disk
from mmrag.store.cascade import multivectors as _multivectors
from mmrag.store.dense import TextVectors
from mmrag.store.filters import SearchFilters
from mmrag.store.hits import Hit

log = logging.getLogger(__name__)

#: Metadata columns kept in RAM for every visible item (filters and hits are served from them).
META = ["id", "collection", "doc_id", "source_uri", "modality", "page", "start_s", "end_s"]
HIT_COLUMNS = [*META, "text"]
#: one batch of token vectors for a snapshot: rows, their vectors end to end (float32, or int8 with the scales that
#: follow), and each row's length
Fetched = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


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
    pooled: np.ndarray  # [n, dim] float16 or float32 (pooled_store), L2-normalised
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
    first_stage_k: int | None = None  # chosen for the config's recall_target at load (None: the config's)

    @property
    def n(self) -> int:
        return len(self.ids)

    def nbytes(self) -> dict[str, int]:
        disk = on_disk(self.tokens)
        out = {
            "pooled": self.pooled.nbytes,
            "tokens": 0 if self.tokens is None or disk else self.tokens[: self.tok_used].nbytes,
            "token_scales": 0 if self.tok_scale is None or disk else self.tok_scale[: self.tok_used].nbytes,
            "offsets": self.tok_start.nbytes + self.tok_len.nbytes,
            "metadata": sum(a.nbytes for a in (self.page, self.start_s, self.end_s, *(c.codes for c in self._codes()))),
        }
        if self.exact is not None:
            out["exact_multivectors"] = sum(m.nbytes for m in self.exact)
        if self.text is not None:
            out["text_vectors"] = self.text.nbytes
        return out

    def disk_nbytes(self) -> dict[str, int]:
        """Bytes of the token arenas that live in memory-mapped files (``token_tier: disk``), per part."""
        if not on_disk(self.tokens):
            return {}
        scales = 0 if self.tok_scale is None else self.tok_scale[: self.tok_used].nbytes
        return {"tokens": self.tokens[: self.tok_used].nbytes, "token_scales": scales}

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


__all__ = ["HIT_COLUMNS", "META", "Codes", "Fetched", "Snapshot", "channels", "float_column"]
