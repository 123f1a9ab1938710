"""Search over an mmrag store: the visual cascade, BM25, the dense text channel, and their weighted fusion.

The index (:class:`SearchIndex`) holds an immutable snapshot of the visible items in RAM and serves four modes:
``visual`` (the cascade below), ``text`` (BM25, :mod:`mmrag.store.fulltext`), ``dense`` (best text window by cosine,
:mod:`mmrag.store.dense`) and ``hybrid`` (:mod:`mmrag.store.fusion` of the channels with a positive weight; which
weights a collection uses is measured per collection, :mod:`mmrag.calibration`). Filters are typed
(:mod:`mmrag.store.filters`); results are :class:`~mmrag.store.hits.Hit`.

Visual search (:meth:`SearchIndex.search_visual`) is a three-stage cascade, each stage scoring fewer items
with a more exact score:

1. **pooled** — the mean of the query's token vectors against every item's L2-normalised mean vector
   (``pooled`` column), held in RAM as a float32 matrix: one mat-vec over the whole collection. Ranking by
   it is the same as ranking by the sum over query tokens of the dot with the pooled vector. Keeps
   ``first_stage_k`` candidates.
2. **tokens** — MaxSim of the query against the candidates' token vectors held in RAM quantised to int8
   (one scale per token, 128 B per token instead of 512). Keeps ``exact_k``.
3. **maxsim** — exact float32 MaxSim (:func:`mmrag.models.encoder.maxsim`) over the ``exact_k`` survivors,
   whose multivectors are fetched from LanceDB by row id at the snapshot's pinned table version.

Why this shape (measured on 2 shared cores, see ``benchmarks/results/retrieval.md``): LanceDB's flat multivector
search scans every float32 token (~0.25 s per query at 1k items, tens of seconds at 100k); all float32 tokens of
100k items (~4.4 GB) do not fit comfortably in RAM; fetching ~2000 candidates' multivectors from LanceDB per query
is far too slow (one row costs ~0.2-0.5 ms); and both centroid codes (PLAID-style, 2 B per token, 1024-4096
centroids) and per-item sub-centroids ranked candidates worse than the pooled vectors on clustered data. int8
tokens lose nothing measurable (recall@10 unchanged vs float32 tokens), so stage 3 needs a few dozen rows from
disk. The pooled stage is the recall bottleneck at 100k items: ``first_stage_k`` 1000 gave recall@10 0.945,
2000 gave 0.977, 4000 gave 0.992.

The index is an immutable snapshot swapped on :meth:`SearchIndex.refresh`, so searches running in other
threads never see a half-built index. The maths runs in torch when it is installed (imported on first use;
the int8 token stage measured ~1.5-2x faster than numpy) and all three stages use the same library: numpy's
BLAS threads and torch's spinning side by side slowed the token stage 2-4x. Run torch single-threaded in the
serving process (a Ray replica with fractional ``num_cpus`` already gets ``OMP_NUM_THREADS=1``): the index then
scores token blocks on one Python thread per core, which do not wait on each other. With torch's own
intra-op threads on a loaded 2-core machine every small op waits at an OpenMP barrier for a preempted thread,
and the search was 10x slower.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from mmrag.models.encoder import maxsim
from mmrag.store import schema as S
from mmrag.store.cascade import TokenStore
from mmrag.store.cascade import fill as _fill
from mmrag.store.cascade import multivectors as _multivectors
from mmrag.store.cascade import ranges as _ranges
from mmrag.store.cascade import top as _top
from mmrag.store.cascade import top_idx as _top_idx
from mmrag.store.dense import TextVectors, ann_candidates
from mmrag.store.filters import MAX_FILTER_CHARS, MAX_FILTER_VALUES, Modality, SearchFilters
from mmrag.store.fulltext import bm25, fts_terms
from mmrag.store.fusion import FusionMethod, fuse
from mmrag.store.hits import Hit

log = logging.getLogger(__name__)

#: Metadata columns kept in RAM for every visible item (filters and hits are served from them).
_META = ["id", "collection", "doc_id", "source_uri", "modality", "page", "start_s", "end_s"]
_HIT_COLUMNS = [*_META, "text"]

#: Tokens scored per block in the token stage: 8192 x 128 float32 = 4 MiB stays in cache.
_TOKEN_BLOCK = 8192


class SearchError(ValueError):
    """A search that cannot run as asked; the message says what to change."""


# ------------------------------------------------------------------------------------------------ config
class SearchIndexConfig(BaseModel):
    """Stage sizes and memory layout of a :class:`SearchIndex`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_stage_k: int = Field(
        default=1500,
        ge=1,
        description="Candidates kept by the pooled-vector stage; the token stage's cost grows linearly with it. "
        "Recall@10 at 100k clustered items: 0.945 with 1000, 0.977 with 2000, 0.992 with 4000; 1500 keeps "
        "p50 under 50 ms there on 2 cores (benchmarks/results/retrieval.md).",
    )
    exact_k: int = Field(
        default=20,
        ge=1,
        description="Candidates re-scored with exact float32 MaxSim (multivectors fetched from LanceDB). The int8 "
        "token stage ranks almost exactly: recall@10 was the same with 20, 40 and 80 at 10k and 100k items.",
    )
    token_store: TokenStore = Field(
        default="int8",
        description="How token vectors are held in RAM for the token stage: int8 (1 byte per value plus one float "
        "scale per token), float16, or none (no token stage: the first stage's candidates go straight to the "
        "exact stage, so keep first_stage_k small; for tiny stores or very little RAM).",
    )
    backend: Literal["auto", "torch", "numpy"] = Field(
        default="auto",
        description="Library for the scoring maths: auto is torch when installed. All three stages use the same "
        "one: interleaving numpy's BLAS threads with torch's made the token stage 2-4x slower on 2 cores.",
    )
    token_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads scoring token blocks in parallel. None: one per CPU when torch itself runs on one "
        "thread (a Ray replica), else 1 (torch parallelises each op). Many small parallel ops made the token stage "
        "5x slower on a loaded 2-core machine (each OpenMP barrier waits for a preempted thread); threads that pull "
        "blocks from a queue do not wait for each other.",
    )
    fusion_depth: int = Field(default=50, ge=1, description="Hits taken from each ranking before hybrid fusion.")
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank-fusion constant.")
    weights: dict[str, float] = Field(
        default_factory=lambda: {"bm25": 0.7, "dense": 0.3},
        description="Channel weights of hybrid search when a query names none (callers pass the collection's "
        "calibrated weights; see mmrag.calibration).",
    )
    fusion: FusionMethod = Field(default="rrf", description="Fusion method when a query names none.")
    dense_first_stage_k: int = Field(
        default=300,
        ge=1,
        description="Dense text channel on large collections: items kept by the mean-vector stage before their "
        "windows are scored.",
    )
    dense_exact_rows: int = Field(
        default=5000,
        ge=1,
        description="Up to this many candidate items, the dense channel scores every window (no first stage).",
    )
    dense_ann: bool = Field(
        default=False,
        description="Take the dense channel's first stage from LanceDB's vector index on `text_vector` when the "
        "table has one (ingestion builds it once a collection is large: store.text_ann_min_rows) instead of from "
        "the projected mean vectors in RAM. Off by default: at 100k items the index's stage was 13x slower at the same "
        "recall (benchmarks/results/dense_ann.md).",
    )
    dense_ann_nprobes: int = Field(default=20, ge=1, description="IVF partitions the dense first stage probes.")
    dense_ann_refine_factor: int | None = Field(
        default=None,
        ge=1,
        description="Re-rank this many times dense_first_stage_k of the index's candidates by their full vectors "
        "(None: no refine; the window stage re-scores the candidates anyway).",
    )
    snippet_chars: int = Field(default=300, ge=0, description="Characters of an item's text returned in a hit.")
    max_query_terms: int = Field(default=64, ge=1, description="Distinct words of a text query passed to BM25.")
    load_batch_rows: int = Field(default=1024, ge=1, description="Rows per batch when reading multivectors.")
    fetch_chunk_rows: int = Field(default=2048, ge=1, description="Row ids per LanceDB take while loading.")


# ------------------------------------------------------------------------------------------------ snapshot
class _Codes:
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


def _float_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A nullable numeric column as float64 with NaN for null (NaN compares false, like SQL NULL)."""
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


@dataclass
class _Snapshot:
    """Everything one search needs, immutable once built."""

    version: int | None
    table: Any | None  # LanceDB table pinned at ``version`` (None for array-backed indexes)
    has_fts: bool
    dim: int
    ids: list[str]
    id_row: dict[str, int]
    row_ids: np.ndarray | None  # LanceDB row ids at ``version``
    pooled: np.ndarray  # [n, dim] float32, L2-normalised
    collection: _Codes
    modality: _Codes
    doc_id: _Codes
    source_uri: _Codes
    page: np.ndarray  # float64, NaN where null
    start_s: np.ndarray
    end_s: np.ndarray
    tok_start: np.ndarray  # int64 [n]
    tok_len: np.ndarray  # int64 [n]; 0 = not visually searchable
    tokens: np.ndarray | None  # [total, dim] int8 / float16, or None
    tok_scale: np.ndarray | None  # float32 [total] (int8 only)
    exact: list[np.ndarray] | None = None  # array-backed: float32 multivectors
    texts: list[str | None] | None = None  # array-backed: item texts
    has_text: np.ndarray | None = None  # bool [n]: the item has text for BM25 (None: unknown, assume yes)
    text: TextVectors | None = None  # dense text channel (None: the store has no text vectors)
    has_text_ann: bool = False  # the table at ``version`` has a vector index on ``text_vector``

    @property
    def n(self) -> int:
        return len(self.ids)

    def nbytes(self) -> dict[str, int]:
        out = {
            "pooled": self.pooled.nbytes,
            "tokens": 0 if self.tokens is None else self.tokens.nbytes,
            "token_scales": 0 if self.tok_scale is None else self.tok_scale.nbytes,
            "offsets": self.tok_start.nbytes + self.tok_len.nbytes,
            "metadata": sum(a.nbytes for a in (self.page, self.start_s, self.end_s, *(c.codes for c in self._codes()))),
        }
        if self.exact is not None:
            out["exact_multivectors"] = sum(m.nbytes for m in self.exact)
        if self.text is not None:
            out["text_vectors"] = self.text.nbytes
        return out

    def _codes(self) -> tuple[_Codes, ...]:
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


# ------------------------------------------------------------------------------------------------ index
@dataclass
class SearchQuery:
    """One query for :meth:`SearchIndex.search_many` (the arguments of :meth:`SearchIndex.search`)."""

    mode: str
    query_mv: np.ndarray | None
    query_text: str
    k: int
    filters: SearchFilters
    first_stage_k: int | None = None
    exact_k: int | None = None
    rrf_k: int | None = None
    #: Dense text channel: the query's text-model vector (needed by ``dense`` mode and hybrid with a dense weight).
    query_vec: np.ndarray | None = None
    #: Hybrid channel weights (``visual``, ``bm25``, ``dense``); None: ``config.weights``.
    weights: dict[str, float] | None = None
    fusion: str | None = None


@dataclass
class _Plan:
    """A checked query with its in-RAM stages done: what the exact stage and the fusion need."""

    q: np.ndarray | None = None
    cand: np.ndarray | None = None
    stage: dict[str, np.ndarray] = field(default_factory=dict)
    depth: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    dense_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dense_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    visual_depth: int = 0  # hybrid: how many visual hits go into the fusion
    empty: bool = False


class SearchIndex:
    """Visual, text and hybrid search over the visible items of an mmrag store.

    Build it with :meth:`from_store` / :meth:`from_table` (LanceDB) or :meth:`from_arrays` (benchmarks).
    It holds in RAM, per visible item: the pooled vector (float32), the token vectors quantised per
    ``config.token_store``, and the metadata filters need. :meth:`refresh` picks up new table versions
    and re-reads only the multivectors of items it has not seen (an item id is a hash of its content).
    """

    def __init__(self, config: SearchIndexConfig | dict[str, Any] | None = None, *, table_opener: Any = None) -> None:
        self.config = SearchIndexConfig.model_validate(config or {})
        self._open = table_opener  # () -> a fresh LanceDB handle on the items table, or None if it does not exist
        self._probe: Any = None
        self._lock = threading.Lock()
        self._snap: _Snapshot | None = None
        self._use_torch: bool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._executor_workers = 0
        self.last_refresh_s: float = 0.0

    # ---------------------------------------------------------------------------------------- building
    @classmethod
    def from_store(cls, store: Any, config: SearchIndexConfig | dict[str, Any] | None = None) -> SearchIndex:
        """An index over a :class:`~mmrag.store.LanceStore`'s items table, loaded now (empty if none yet)."""
        return cls.from_db(store._db, config)  # the store's connection carries its storage options

    @classmethod
    def from_db(cls, db: Any, config: SearchIndexConfig | dict[str, Any] | None = None) -> SearchIndex:
        """An index over the items table of a LanceDB connection, loaded now (empty if none yet).

        The index opens its own table handles (one pinned to a version per snapshot), so it never moves
        the handles that writers use.
        """

        def opener() -> Any:
            return db.open_table(S.ITEMS) if S.ITEMS in set(db.table_names()) else None

        index = cls(config, table_opener=opener)
        index.refresh(force=True)
        return index

    @classmethod
    def from_arrays(
        cls,
        ids: Sequence[str],
        multivectors: Sequence[np.ndarray],
        *,
        collection: str | Sequence[str] = "default",
        modality: str | Sequence[str] = "page",
        doc_ids: Sequence[str] | None = None,
        source_uris: Sequence[str] | None = None,
        pages: Sequence[int | None] | None = None,
        texts: Sequence[str | None] | None = None,
        pooled: np.ndarray | None = None,
        text_vectors: Sequence[np.ndarray | None] | None = None,
        config: SearchIndexConfig | dict[str, Any] | None = None,
    ) -> SearchIndex:
        """An in-memory index (no LanceDB; BM25 unavailable); the exact stage reads ``multivectors``, the dense
        channel ``text_vectors`` (per item ``[n_windows, dim]`` or None) when given."""
        n = len(ids)
        if len(multivectors) != n:
            raise SearchError(f"{len(multivectors)} multivectors for {n} ids")
        index = cls(config)
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
        snap = index._build(meta, pooled, dim, None, lens, {}, lambda rows: ((r, mvs[r]) for r in rows), None)
        snap.exact = mvs
        if texts is not None:
            snap.has_text = np.asarray([bool(t) for t in texts], dtype=bool)
        snap.texts = list(texts) if texts is not None else [None] * n
        if text_vectors is not None:
            if len(text_vectors) != n:
                raise SearchError(f"{len(text_vectors)} text vector lists for {n} ids")
            tdim = next((len(v[0]) for v in text_vectors if v is not None and len(v)), 0)
            snap.text = TextVectors.build(n, tdim, ((r, v, None) for r, v in enumerate(text_vectors)))
        index._snap = snap
        return index

    # ---------------------------------------------------------------------------------------- refresh
    @property
    def version(self) -> int | None:
        """LanceDB table version of the current snapshot (None: array-backed or no table yet)."""
        return self._snap.version if self._snap else None

    def __len__(self) -> int:
        return self._snap.n if self._snap else 0

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held in RAM by the current snapshot, per part."""
        return self._snap.nbytes() if self._snap else {}

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the table if its version changed (one manifest read when it did not); True if reloaded."""
        if self._open is None:
            return False
        with self._lock:
            if self._probe is None:
                self._probe = self._open()
                if self._probe is None:
                    return False
            else:
                self._probe.checkout_latest()
            latest = self._probe.version
            old = self._snap
            if old is not None and old.version == latest and not force:
                return False
            t0 = time.perf_counter()
            pinned = self._open()
            pinned.checkout(latest)
            self._snap = self._load(pinned, latest, old)
            self.last_refresh_s = time.perf_counter() - t0
            log.info("search index at version %s: %d items in %.1fs", latest, self._snap.n, self.last_refresh_s)
            return True

    def _load(self, table: Any, version: int, old: _Snapshot | None) -> _Snapshot:
        from lancedb.expr import col, lit

        dim = table.schema.field("pooled").type.list_size
        visible = (col("visible") == lit(True)).to_sql()
        meta = (
            table.search()
            .where(visible)
            .select([*_META, "pooled", "n_tokens", "text_source"])
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
        n_tokens = np.nan_to_num(_float_column(meta.column("n_tokens"))).astype(np.int64)
        indices = table.list_indices()
        has_fts = any(getattr(i, "columns", None) == ["text"] for i in indices)
        has_text_ann = any(getattr(i, "columns", None) == [S.TEXT_VECTOR] for i in indices)

        ids = meta.column("id").to_pylist()
        reuse: dict[int, int] = {}
        if old is not None and old.tokens is not None and self.config.token_store != "none":
            reuse = {r: o for r, o in ((r, old.id_row.get(i)) for r, i in enumerate(ids)) if o is not None}

        def fetch(rows: list[int]) -> Iterator[tuple[int, np.ndarray]]:
            if len(rows) > 0.5 * n:  # mostly new: one streaming scan beats many takes
                want = {ids[r]: r for r in rows}
                reader = (
                    table.search()
                    .where(visible)
                    .select(["id", "multivector"])
                    .limit(None)
                    .to_batches(self.config.load_batch_rows)
                )
                for batch in reader:
                    for i, mv in zip(batch.column(0).to_pylist(), _multivectors(batch.column(1), dim), strict=True):
                        if i in want:
                            yield want[i], mv
                return
            step = self.config.fetch_chunk_rows
            for s in range(0, len(rows), step):
                chunk = rows[s : s + step]
                got = table.take_row_ids([int(row_ids[r]) for r in chunk]).select(["id", "multivector"]).to_arrow()
                by_id = dict(
                    zip(got.column("id").to_pylist(), _multivectors(got.column("multivector"), dim), strict=True)
                )
                for r in chunk:
                    if ids[r] in by_id:
                        yield r, by_id[ids[r]]

        snap = self._build(meta, pooled, dim, row_ids, n_tokens, reuse, fetch, old)
        snap.version, snap.table, snap.has_fts, snap.has_text_ann = version, table, has_fts, has_text_ann
        snap.has_text = np.asarray([t is not None for t in meta.column("text_source").to_pylist()], dtype=bool)
        tdim = S.text_dim_of(table.schema)
        if tdim:
            snap.text = self._load_text(table, visible, ids, tdim, old)
        return snap

    def _load_text(self, table: Any, visible: str, ids: list[str], tdim: int, old: _Snapshot | None) -> TextVectors:
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
                .to_batches(self.config.load_batch_rows)
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

    def _build(
        self,
        meta: pa.Table,
        pooled: np.ndarray,
        dim: int,
        row_ids: np.ndarray | None,
        n_tokens: np.ndarray,
        reuse: dict[int, int],
        fetch: Any,
        old: _Snapshot | None,
    ) -> _Snapshot:
        """Assemble a snapshot; ``reuse`` maps new row -> old row whose tokens are copied, not re-read."""
        ids = meta.column("id").to_pylist()
        n = len(ids)
        store = self.config.token_store
        tok_len = np.maximum(np.asarray(n_tokens, np.int64), 0)
        if reuse and old is not None:
            new_rows = np.fromiter(reuse.keys(), np.int64, len(reuse))
            old_rows = np.fromiter(reuse.values(), np.int64, len(reuse))
            tok_len[new_rows] = old.tok_len[old_rows]  # same id = same content = same tokens
        tok_start = np.zeros(n, np.int64)
        if n:
            tok_start[1:] = np.cumsum(tok_len)[:-1]
        tokens = scales = None
        if store != "none":
            total = int(tok_len.sum())
            tokens = np.empty((total, dim), np.int8 if store == "int8" else np.float16)
            scales = np.empty(total, np.float32) if store == "int8" else None
            if reuse and old is not None:
                dst = _ranges(tok_start[new_rows], tok_len[new_rows])
                src = _ranges(old.tok_start[old_rows], tok_len[new_rows])
                tokens[dst] = old.tokens[src]
                if scales is not None:
                    scales[dst] = old.tok_scale[src]
            missing = [r for r in range(n) if r not in reuse and tok_len[r] > 0]
            seen = np.zeros(n, bool)
            mismatched = 0
            for r, mv in fetch(missing):
                mismatched += _fill(tokens, scales, int(tok_start[r]), int(tok_len[r]), mv, store)
                seen[r] = True
            lost = [r for r in missing if not seen[r]]
            if lost:  # rows that vanished between reads of one pinned version cannot happen; stay searchable-safe
                tok_len[lost] = 0
            if mismatched:
                log.warning(
                    "%d items have n_tokens unequal to their multivector's length; token stage pads", mismatched
                )
        return _Snapshot(
            version=None,
            table=None,
            has_fts=False,
            dim=dim,
            ids=ids,
            id_row={i: r for r, i in enumerate(ids)},
            row_ids=row_ids,
            pooled=np.array(pooled, dtype=np.float32, order="C"),  # a writable copy (Arrow buffers are read-only)
            collection=_Codes(meta.column("collection")),
            modality=_Codes(meta.column("modality")),
            doc_id=_Codes(meta.column("doc_id")),
            source_uri=_Codes(meta.column("source_uri")),
            page=_float_column(meta.column("page")),
            start_s=_float_column(meta.column("start_s")),
            end_s=_float_column(meta.column("end_s")),
            tok_start=tok_start,
            tok_len=tok_len,
            tokens=tokens,
            tok_scale=scales,
        )

    # ---------------------------------------------------------------------------------------- visual
    def search_visual(
        self,
        query_mv: np.ndarray,
        k: int,
        *,
        filters: SearchFilters,
        first_stage_k: int | None = None,
        exact_k: int | None = None,
    ) -> list[Hit]:
        """Top ``k`` items by exact MaxSim, found through the pooled -> tokens -> exact cascade."""
        return self._one(SearchQuery("visual", query_mv, "", k, filters, first_stage_k=first_stage_k, exact_k=exact_k))

    def _candidates(
        self,
        snap: _Snapshot,
        q: np.ndarray,
        k: int,
        filters: SearchFilters,
        first_stage_k: int | None,
        exact_k: int | None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Stages 1 and 2 (in RAM): the rows whose multivectors stage 3 needs, with their stage scores."""
        cfg = self.config
        for name, v in (("first_stage_k", first_stage_k), ("exact_k", exact_k)):
            if v is not None and (not isinstance(v, int | np.integer) or v < 1):
                raise SearchError(f"{name} must be a positive integer, got {v!r}")
        c1 = first_stage_k or cfg.first_stage_k
        c2 = max(exact_k or cfg.exact_k, k)
        mask = snap.mask(filters) & (snap.tok_len > 0)
        allowed = np.flatnonzero(mask)
        if not len(allowed):
            return allowed, {}

        # Stage 1: pooled vectors. Ranking by <mean(q), p> equals ranking by sum_i <q_i, p>.
        s1 = self._pooled_scores(snap, q.mean(axis=0), allowed)
        cand, s1c = _top(allowed, s1, c1)
        stage = {"pooled": s1c}

        # Stage 2: MaxSim over the int8 / float16 tokens held in RAM.
        if snap.tokens is not None and len(cand) > c2:
            s2 = self._token_maxsim(snap, q, cand)
            keep = _top_idx(s2, c2)
            cand, stage = cand[keep], {"pooled": s1c[keep], "tokens": s2[keep]}
        return cand, stage

    def _exact(
        self,
        snap: _Snapshot,
        q: np.ndarray,
        k: int,
        cand: np.ndarray,
        stage: dict[str, np.ndarray],
        fetched: dict[int, tuple[np.ndarray, str | None]],
    ) -> tuple[list[int], list[float], list[dict[str, float]], list[str | None]]:
        """Stage 3: exact float32 MaxSim over the candidates' multivectors (``fetched``: row -> (multivector, text)),
        top ``k``."""
        if not len(cand):
            return [], [], [], []
        empty = (np.zeros((0, snap.dim), np.float32), None)
        pairs = [fetched.get(int(r), empty) for r in cand]
        mvs, texts = [p[0] for p in pairs], [p[1] for p in pairs]
        ok = np.array([len(m) > 0 for m in mvs], dtype=bool)
        s3 = np.full(len(cand), -np.inf, np.float32)
        if ok.any():
            s3[ok] = self._exact_maxsim(q, [m for m, good in zip(mvs, ok, strict=True) if good])
        order = sorted(np.flatnonzero(ok).tolist(), key=lambda j: (-float(s3[j]), snap.ids[cand[j]]))[:k]
        rows = [int(cand[j]) for j in order]
        scores = [float(s3[j]) for j in order]
        stages = [{**{name: float(v[j]) for name, v in stage.items()}, "maxsim": float(s3[j])} for j in order]
        return rows, scores, stages, [texts[j] for j in order]

    def _torch(self) -> bool:
        if self._use_torch is None:
            want = self.config.backend
            self._use_torch = want == "torch" or (want == "auto" and importlib.util.find_spec("torch") is not None)
        return self._use_torch

    def _pooled_scores(self, snap: _Snapshot, qmean: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """``<mean(q), pooled>`` of the allowed rows (whole-matrix product unless few rows are allowed)."""
        few = len(allowed) < snap.n // 4
        mat = snap.pooled[allowed] if few else snap.pooled
        if self._torch():
            import torch

            scores = torch.mv(torch.from_numpy(mat), torch.from_numpy(qmean)).numpy()
        else:
            scores = mat @ qmean
        return scores if few else scores[allowed]

    def _exact_maxsim(self, q: np.ndarray, mvs: list[np.ndarray]) -> np.ndarray:
        """Exact float32 MaxSim; the torch path computes what :func:`~mmrag.models.encoder.maxsim` does."""
        if not self._torch():
            return maxsim(q, mvs)
        import torch

        lens = np.array([len(m) for m in mvs], np.int64)
        seg = np.zeros(len(mvs), np.int64)
        seg[1:] = np.cumsum(lens)[:-1]
        sims = (torch.from_numpy(q) @ torch.from_numpy(np.concatenate(mvs)).T).numpy()
        return np.maximum.reduceat(sims, seg, axis=1).sum(axis=0, dtype=np.float64).astype(np.float32)

    def _token_maxsim(self, snap: _Snapshot, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """MaxSim of ``q`` against the candidates' quantised tokens, scored in cache-sized blocks."""
        order = np.argsort(snap.tok_start[cand], kind="stable")  # sequential reads through the token matrix
        starts, lens = snap.tok_start[cand][order], snap.tok_len[cand][order]
        seg = np.zeros(len(cand), np.int64)
        seg[1:] = np.cumsum(lens)[:-1]
        idx = _ranges(starts, lens)
        sims = self._token_sims(snap, q, idx)  # [n_q, M]
        best = np.maximum.reduceat(sims, seg, axis=1)
        out = np.empty(len(cand), np.float32)
        out[order] = best.sum(axis=0, dtype=np.float64)
        return out

    def _token_sims(self, snap: _Snapshot, q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``[n_q, len(idx)]`` similarities of the query to tokens ``idx``, dequantised block by block."""
        m = len(idx)
        sims = np.empty((q.shape[0], m), np.float32)
        blocks = [(s, min(m, s + _TOKEN_BLOCK)) for s in range(0, m, _TOKEN_BLOCK)]
        if self._torch():
            import torch

            toks, qt, it = torch.from_numpy(snap.tokens), torch.from_numpy(q), torch.from_numpy(idx)

            def run(block: tuple[int, int]) -> None:
                s, e = block
                sims[:, s:e] = torch.mm(toks.index_select(0, it[s:e]).float(), qt.T).numpy().T

        else:

            def run(block: tuple[int, int]) -> None:
                s, e = block
                sims[:, s:e] = q @ snap.tokens[idx[s:e]].astype(np.float32).T

        workers = self._workers()
        if workers > 1 and len(blocks) > 1:
            list(self._pool(workers).map(run, blocks))
        else:
            for block in blocks:
                run(block)
        if snap.tok_scale is not None:
            sims *= snap.tok_scale[idx]
        return sims

    def _workers(self) -> int:
        """Threads for the token stage: its blocks are independent, so threads pull them from a shared queue.

        By default they are used only when torch runs single-threaded (as in a Ray replica, where
        ``OMP_NUM_THREADS`` is the replica's ``num_cpus``): stacking them on torch's own threads would oversubscribe.
        """
        if self.config.token_threads is not None:
            return self.config.token_threads
        if not self._torch():
            return 1
        import torch

        return (os.cpu_count() or 1) if torch.get_num_threads() == 1 else 1

    def _pool(self, workers: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._executor_workers != workers:
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
                self._executor = ThreadPoolExecutor(workers, thread_name_prefix="mmrag-search")
                self._executor_workers = workers
            return self._executor

    def close(self) -> None:
        """Stop the token-stage threads (the index stays usable; they restart on demand)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def _fetch_rows(
        self, snap: _Snapshot, rows: Sequence[int] | np.ndarray
    ) -> dict[int, tuple[np.ndarray, str | None]]:
        """row -> (float32 multivector, text) for ``rows``, in one LanceDB take at the snapshot's version (or from
        the arrays given). Rows deleted meanwhile are absent."""
        rows = sorted({int(r) for r in rows})
        if not rows:
            return {}
        if snap.exact is not None:
            return {r: (snap.exact[r], snap.texts[r] if snap.texts else None) for r in rows}
        got = snap.table.take_row_ids([int(snap.row_ids[r]) for r in rows]).select(["id", "multivector", "text"])
        tbl = got.to_arrow()
        out: dict[int, tuple[np.ndarray, str | None]] = {}
        for i, m, t in zip(
            tbl.column("id").to_pylist(),
            _multivectors(tbl.column("multivector"), snap.dim),
            tbl.column("text").to_pylist(),
            strict=True,
        ):
            row = snap.id_row.get(i)
            if row is not None:
                out[row] = (m, t)
        return out

    # ---------------------------------------------------------------------------------------- text
    def search_text(self, query: str, k: int, *, filters: SearchFilters) -> list[Hit]:
        """Top ``k`` items by BM25 over ``text`` (LanceDB full-text index), filters applied before ranking."""
        _check_k(k)
        snap = self._snap
        if snap is None or snap.table is None:
            if snap is not None and snap.exact is not None:
                raise SearchError("text search needs a LanceDB-backed index (build it with SearchIndex.from_store)")
            return []
        if not snap.has_fts:
            raise SearchError(
                "the items table has no full-text index on `text`; build it with LanceStore.refresh_text_index() "
                "(ingestion does this) and refresh the index"
            )
        return [h for h, _ in self._text(snap, query, k, filters)]

    def _text(self, snap: _Snapshot, query: str, k: int, filters: SearchFilters) -> list[tuple[Hit, float]]:
        out = []
        for r in bm25(snap.table, query, k, filters, _HIT_COLUMNS, self.config.max_query_terms):
            row = snap.id_row.get(r["id"])
            score = float(r["_score"])
            if row is None:  # visible at this version but not in RAM cannot happen; be safe anyway
                continue
            out.append((snap.hit(row, score, {"bm25": score}, r.get("text"), self.config.snippet_chars), score))
        out.sort(key=lambda p: (-p[1], p[0].id))
        return out

    # ---------------------------------------------------------------------------------------- dense
    @property
    def has_dense(self) -> bool:
        """Whether the current snapshot holds dense text vectors (the store has a text model's columns)."""
        snap = self._snap
        return snap is not None and snap.text is not None and bool(snap.text.count.any())

    @property
    def has_bm25(self) -> bool:
        snap = self._snap
        return snap is not None and snap.table is not None and snap.has_fts

    def channels(self) -> list[str]:
        """The channels this snapshot can serve: ``visual`` (always), ``bm25``, ``dense``."""
        return _channels(self._snap)

    def search_dense(self, query_vec: np.ndarray, k: int, *, filters: SearchFilters) -> list[Hit]:
        """Top ``k`` items by the dense text channel (best text window's cosine to the query vector)."""
        return self._one(SearchQuery("dense", None, "", k, filters, query_vec=query_vec))

    def _dense_rows(
        self, snap: _Snapshot, qvec: np.ndarray | None, k: int, filters: SearchFilters
    ) -> tuple[np.ndarray, np.ndarray]:
        if snap.text is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = self._check_vec(qvec, snap.text.dim)
        allowed = np.flatnonzero(snap.mask(filters))
        cfg = self.config
        candidates = None
        if cfg.dense_ann and snap.has_text_ann and snap.table is not None and len(allowed) > cfg.dense_exact_rows:
            # the first stage from LanceDB's vector index on the mean vectors, at the snapshot's pinned version
            ids = ann_candidates(
                snap.table, q, filters.to_sql(), cfg.dense_first_stage_k,
                nprobes=cfg.dense_ann_nprobes, refine_factor=cfg.dense_ann_refine_factor,
            )  # fmt: skip
            candidates = np.fromiter((snap.id_row[i] for i in ids if i in snap.id_row), np.int64)
        rows, scores = snap.text.search(
            q, allowed, k, first_stage_k=cfg.dense_first_stage_k, exact_rows=cfg.dense_exact_rows,
            candidates=candidates,
        )  # fmt: skip
        # equal scores (e.g. items whose only window is the same title) in id order, not in write order
        o = sorted(range(len(rows)), key=lambda i: (-float(scores[i]), snap.ids[int(rows[i])]))
        return rows[o], scores[o]

    @staticmethod
    def _check_vec(qvec: Any, dim: int) -> np.ndarray:
        if qvec is None:
            raise SearchError("dense search needs the query's text vector (models.text)")
        q = np.asarray(qvec, dtype=np.float32).reshape(-1)
        if q.shape[0] != dim:
            raise SearchError(
                f"the query's text vector has {q.shape[0]} dimensions but the store's text vectors have {dim}; "
                "embed queries with the text model the store was built with"
            )
        if not np.isfinite(q).all():
            raise SearchError("the query's text vector contains NaN or infinite values")
        return q

    # ---------------------------------------------------------------------------------------- entry points
    def search(
        self,
        mode: str,
        query_mv: np.ndarray | None,
        query_text: str,
        k: int,
        *,
        filters: SearchFilters,
        first_stage_k: int | None = None,
        rrf_k: int | None = None,
        query_vec: np.ndarray | None = None,
        weights: dict[str, float] | None = None,
        fusion: str | None = None,
    ) -> list[Hit]:
        """One entry point for the four modes (the retriever deployment and the in-process searcher use it):
        ``visual`` needs ``query_mv``, ``text`` (BM25) only ``query_text``, ``dense`` ``query_vec``, and ``hybrid``
        what its channels with a positive weight need."""
        return self._one(
            SearchQuery(
                mode,
                query_mv,
                query_text,
                k,
                filters,
                first_stage_k=first_stage_k,
                rrf_k=rrf_k,
                query_vec=query_vec,
                weights=weights,
                fusion=fusion,
            )
        )

    def search_hybrid(
        self,
        query_mv: np.ndarray | None,
        query_text: str,
        k: int,
        *,
        filters: SearchFilters,
        first_stage_k: int | None = None,
        exact_k: int | None = None,
        rrf_k: int | None = None,
        query_vec: np.ndarray | None = None,
        weights: dict[str, float] | None = None,
        fusion: str | None = None,
    ) -> list[Hit]:
        """Fusion (:mod:`mmrag.store.fusion`) of the visual, BM25 and dense rankings, each over its top
        ``max(k, fusion_depth)``, with the given channel ``weights`` (else ``config.weights``).

        Channels with weight 0 are not run at all. A channel the store cannot serve (no full-text index, no text
        vectors) is dropped and the others' weights are renormalised; if none is left, the visual ranking is used.
        """
        return self._one(
            SearchQuery(
                "hybrid",
                query_mv,
                query_text,
                k,
                filters,
                first_stage_k=first_stage_k,
                exact_k=exact_k,
                rrf_k=rrf_k,
                query_vec=query_vec,
                weights=weights,
                fusion=fusion,
            )
        )

    def search_many(self, queries: Sequence[SearchQuery]) -> list[list[Hit] | SearchError]:
        """Search a batch of queries (any modes) against one snapshot; a query's :class:`SearchError` is returned
        in its place, so one bad query does not fail the others.

        The in-RAM stages run per query; the exact stage's multivectors come from **one** LanceDB take for the
        union of every visual and hybrid query's candidates, where one query at a time pays the take's fixed cost
        (most of a small store's search time) for each query. Results are those of the one-query methods.
        """
        snap = self._snap
        plans: list[_Plan | SearchError] = []
        for sq in queries:
            try:
                plans.append(self._plan(snap, sq))
            except SearchError as e:
                plans.append(e)
        wanted = [r for p in plans if isinstance(p, _Plan) and p.cand is not None for r in p.cand.tolist()]
        fetched = self._fetch_rows(snap, wanted) if wanted and snap is not None else {}
        # the dense hits' text (snippets, prompts) for rows the visual take did not bring
        out: list[list[Hit] | SearchError] = []
        for sq, plan in zip(queries, plans, strict=True):
            if isinstance(plan, SearchError):
                out.append(plan)
                continue
            try:
                out.append(self._finish(snap, sq, plan, fetched))
            except SearchError as e:
                out.append(e)
        return self._with_texts(snap, out)

    def _with_texts(self, snap: _Snapshot | None, out: list[list[Hit] | SearchError]) -> list[list[Hit] | SearchError]:
        """Fill in the text of the returned hits that came only from the dense channel (one take for the batch):
        only the hits that survive fusion are fetched, not every candidate of every channel."""
        if snap is None:
            return out
        want = {
            snap.id_row[h.id]
            for hits in out
            if isinstance(hits, list)
            for h in hits
            if not h.text and h.id in snap.id_row and (snap.has_text is None or snap.has_text[snap.id_row[h.id]])
        }
        if not want:
            return out
        texts = self._fetch_texts(snap, sorted(want))
        n = self.config.snippet_chars
        return [
            [
                dataclasses.replace(h, text=(texts.get(snap.id_row.get(h.id, -1)) or "")[:n]) if not h.text else h
                for h in hits
            ]
            if isinstance(hits, list)
            else hits
            for hits in out
        ]

    def _one(self, sq: SearchQuery) -> list[Hit]:
        got = self.search_many([sq])[0]
        if isinstance(got, SearchError):
            raise got
        return got

    def _weights(self, snap: _Snapshot | None, sq: SearchQuery) -> dict[str, float]:
        """The hybrid query's positive channel weights over the channels this snapshot can serve, summing to 1."""
        raw = self.config.weights if sq.weights is None else sq.weights
        for name, w in raw.items():
            if name not in ("visual", "bm25", "dense"):
                raise SearchError(f"unknown channel {name!r} in weights; use visual, bm25 or dense")
            if not isinstance(w, int | float) or math.isnan(w) or math.isinf(w) or w < 0:
                raise SearchError(f"the weight of {name!r} must be a finite number >= 0, got {w!r}")
        positive = {c: float(w) for c, w in raw.items() if w > 0}
        if not positive:
            raise SearchError("at least one channel weight must be positive")
        if snap is None:
            return positive
        can = set(_channels(snap))  # of the snapshot this batch runs on, even if a refresh swapped it meanwhile
        usable = {c: w for c, w in positive.items() if c in can}
        if not usable:  # e.g. a store without a full-text index or text vectors: the visual ranking alone
            log.warning("hybrid search: none of %s is available in this store; visual ranking only", sorted(positive))
            return {"visual": 1.0}
        total = sum(usable.values())
        return {c: w / total for c, w in usable.items()}

    def _plan(self, snap: _Snapshot | None, sq: SearchQuery) -> _Plan:
        """Checks a query and runs its in-RAM stages (visual candidates, dense ranking; no I/O)."""
        if sq.mode == "text":
            _check_k(sq.k)
            return _Plan()
        if sq.mode not in ("visual", "hybrid", "dense"):
            raise SearchError(f"unknown search mode {sq.mode!r}; use visual, text, dense or hybrid")
        _check_k(sq.k)
        if sq.mode == "dense":
            if snap is None or snap.n == 0:
                return _Plan(empty=True)
            if snap.text is None:
                raise SearchError("this store has no text vectors (no models.text when it was built): use text")
            rows, scores = self._dense_rows(snap, sq.query_vec, sq.k, sq.filters)
            return _Plan(dense_rows=rows, dense_scores=scores, depth=sq.k)
        if sq.mode == "visual":
            if sq.query_mv is None:
                raise SearchError("visual search needs the query's multivector")
            q = self._check_query(sq.query_mv, snap)
            if snap is None or snap.n == 0:
                return _Plan(q=q, empty=True)
            cand, stage = self._candidates(snap, q, sq.k, sq.filters, sq.first_stage_k, sq.exact_k)
            return _Plan(q=q, cand=cand, stage=stage, depth=sq.k)
        if sq.fusion is not None and sq.fusion not in ("rrf", "score"):
            raise SearchError(f"unknown fusion method {sq.fusion!r}; use rrf or score")
        w = self._weights(snap, sq)
        depth = max(sq.k, self.config.fusion_depth)
        plan = _Plan(depth=depth, weights=w)
        q = None
        if "visual" in w:
            if sq.query_mv is None:
                raise SearchError("hybrid search with a visual weight needs the query's multivector")
            q = plan.q = self._check_query(sq.query_mv, snap)
        if snap is None or snap.n == 0:
            plan.empty = True
            return plan
        if q is not None:
            # the visual list of a fusion needs no exact MaxSim beyond exact_k (the int8 stage already ranks almost
            # exactly); fetching 50 multivectors instead of 20 from LanceDB was most of hybrid's extra time
            exact_k = max(sq.exact_k or self.config.exact_k, sq.k)
            plan.visual_depth = exact_k
            plan.cand, plan.stage = self._candidates(snap, q, exact_k, sq.filters, sq.first_stage_k, exact_k)
        if "dense" in w:
            plan.dense_rows, plan.dense_scores = self._dense_rows(snap, sq.query_vec, depth, sq.filters)
        return plan

    def _finish(
        self,
        snap: _Snapshot | None,
        sq: SearchQuery,
        plan: _Plan,
        fetched: dict[int, tuple[np.ndarray, str | None]],
        texts: dict[int, str | None] | None = None,
    ) -> list[Hit]:
        if sq.mode == "text":
            return self.search_text(sq.query_text, sq.k, filters=sq.filters)
        if plan.empty or snap is None:
            return []
        texts = texts or {}
        dense = [
            snap.hit(
                r,
                s,
                {"dense": float(s)},
                fetched[r][1] if r in fetched else texts.get(r),
                self.config.snippet_chars,
            )
            for r, s in zip(plan.dense_rows.tolist(), plan.dense_scores.tolist(), strict=True)
        ]
        if sq.mode == "dense":
            return dense
        visual: list[Hit] = []
        if plan.cand is not None:
            assert plan.q is not None
            vdepth = plan.visual_depth or plan.depth
            rows, scores, stages, vtexts = self._exact(snap, plan.q, vdepth, plan.cand, plan.stage, fetched)
            visual = [
                snap.hit(r, s, st, t, self.config.snippet_chars)
                for r, s, st, t in zip(rows, scores, stages, vtexts, strict=True)
            ]
        if sq.mode == "visual":
            return visual
        rankings: dict[str, list[Hit]] = {"visual": visual, "dense": dense}
        if "bm25" in plan.weights:
            rankings["bm25"] = [h for h, _ in self._text(snap, sq.query_text, plan.depth, sq.filters)]
        method = sq.fusion or self.config.fusion
        return fuse(rankings, plan.weights, sq.k, method=method, rrf_k=sq.rrf_k or self.config.rrf_k)  # type: ignore[arg-type]

    def _fetch_texts(self, snap: _Snapshot, rows: Sequence[int]) -> dict[int, str | None]:
        """row -> text for ``rows`` (one LanceDB take at the snapshot's version, or the arrays given)."""
        rows = sorted({int(r) for r in rows})
        if snap.texts is not None:
            return {r: snap.texts[r] for r in rows}
        if snap.table is None:
            return {}
        got = snap.table.take_row_ids([int(snap.row_ids[r]) for r in rows]).select(["id", "text"]).to_arrow()
        out: dict[int, str | None] = {}
        for i, t in zip(got.column("id").to_pylist(), got.column("text").to_pylist(), strict=True):
            row = snap.id_row.get(i)
            if row is not None:
                out[row] = t
        return out

    # ---------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _check_query(query_mv: Any, snap: _Snapshot | None) -> np.ndarray:
        q = np.ascontiguousarray(query_mv, dtype=np.float32)
        if q.ndim != 2 or q.shape[0] == 0:
            raise SearchError(f"a visual query must be a [n_tokens >= 1, dim] array, got shape {q.shape}")
        if snap is not None and snap.n and q.shape[1] != snap.dim:
            raise SearchError(
                f"the query has {q.shape[1]}-dimensional token vectors but the store holds {snap.dim}-dimensional "
                "ones; embed queries with the encoder the store was built with"
            )
        if not np.isfinite(q).all():
            raise SearchError("the query embedding contains NaN or infinite values")
        return q


def _channels(snap: _Snapshot | None) -> list[str]:
    out = ["visual"]
    if snap is not None and snap.table is not None and snap.has_fts:
        out.append("bm25")
    if snap is not None and snap.text is not None and bool(snap.text.count.any()):
        out.append("dense")
    return out


def _check_k(k: int) -> None:
    if not isinstance(k, int | np.integer) or k < 1:
        raise SearchError(f"k must be a positive integer, got {k!r}")


__all__ = [
    "MAX_FILTER_CHARS",
    "MAX_FILTER_VALUES",
    "Hit",
    "Modality",
    "SearchError",
    "SearchFilters",
    "SearchIndex",
    "SearchIndexConfig",
    "SearchQuery",
    "fts_terms",
]
