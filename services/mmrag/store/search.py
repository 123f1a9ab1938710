"""Search over an mmrag store: the visual cascade, BM25, the dense text channel, and their weighted fusion.

The index (:class:`SearchIndex`) holds an immutable snapshot of the visible items in RAM and serves four modes:
``visual`` (the cascade below), ``text`` (BM25, :mod:`mmrag.store.fulltext`), ``dense`` (best text window by cosine,
:mod:`mmrag.store.dense`) and ``hybrid`` (:mod:`mmrag.store.fusion` of the channels with a positive weight; which
weights a collection uses is measured per collection, :mod:`mmrag.calibration`). Filters are typed
(:mod:`mmrag.store.filters`); results are :class:`~mmrag.store.hits.Hit`.

Visual search (:meth:`SearchIndex.search_visual`) is a three-stage cascade, each stage scoring fewer items
with a more exact score:

1. **pooled** — the mean of the query's token vectors against every item's L2-normalised mean vector
   (``pooled`` column), held in RAM as a float16 matrix (``pooled_store``): one memory-bound mat-vec over the
   whole collection (15 ms at 1M items on 2 cores). Ranking by it is the same as ranking by the sum over query
   tokens of the dot with the pooled vector. Keeps ``first_stage_k`` candidates, a number that can be chosen at
   load for a recall target (:mod:`mmrag.store.calibrate`).
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

The index is an immutable snapshot (:mod:`mmrag.store.snapshot`) swapped on :meth:`SearchIndex.refresh`, so
searches running in other threads never see a half-built index. The stages' maths is :mod:`mmrag.store.kernels`
(torch when installed, numpy otherwise; why one library and how many threads is explained there); the settings
are :class:`~mmrag.store.search_config.SearchIndexConfig`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmrag.store import schema as S
from mmrag.store.calibrate import calibrate
from mmrag.store.dense import ann_candidates
from mmrag.store.filters import MAX_FILTER_CHARS, MAX_FILTER_VALUES, Modality, SearchFilters
from mmrag.store.fulltext import bm25, fts_terms
from mmrag.store.fusion import fuse
from mmrag.store.hits import Hit
from mmrag.store.kernels import NOT_VISUAL, Scorer
from mmrag.store.search_config import SearchError, SearchIndexConfig
from mmrag.store.snapshot import HIT_COLUMNS, Snapshot
from mmrag.store.snapshot import channels as _channels
from mmrag.store.snapshot_load import array_snapshot, load_snapshot

log = logging.getLogger(__name__)


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
    #: Hybrid on one shard of several (:mod:`mmrag.store.shards`): return each channel's list unfused, over the
    #: channels this shard can serve (no visual fallback); the caller merges every shard's lists and fuses once.
    partial: bool = False


#: A partial hybrid result: channel -> its ranked hits (raw channel scores, best first).
Rankings = dict[str, list[Hit]]


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
    It holds in RAM, per visible item: the pooled vector (float16), the token vectors quantised per
    ``config.token_store``, and the metadata filters need. :meth:`refresh` picks up new table versions
    and reads only the rows of items it has not seen, plus the ``id`` column of the visible rows (an item id is a
    hash of its content; see :mod:`mmrag.store.snapshot`).
    """

    def __init__(self, config: SearchIndexConfig | dict[str, Any] | None = None, *, table_opener: Any = None) -> None:
        self.config = SearchIndexConfig.model_validate(config or {})
        self._open = table_opener  # () -> a fresh LanceDB handle on the items table, or None if it does not exist
        self._probe: Any = None
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._scorer = Scorer(self.config, self._lock)
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
        index = cls(config)
        index._snap = array_snapshot(
            ids,
            multivectors,
            collection=collection,
            modality=modality,
            doc_ids=doc_ids,
            source_uris=source_uris,
            pages=pages,
            texts=texts,
            pooled=pooled,
            text_vectors=text_vectors,
            token_store=index.config.token_store,
            pooled_store=index.config.pooled_store,
        )
        index._choose_sizes(index._snap, None)
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
        """Bring the snapshot to the table's latest version (one manifest read when it did not change): from the
        old snapshot plus the changed rows, or in full when ``force`` or the schema changed. True if it changed."""
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
            snap = load_snapshot(pinned, latest, old, self.config, incremental=not force)
            self._choose_sizes(snap, old)
            self._snap = snap  # one assignment: a search holds either the old snapshot or this one, whole
            self.last_refresh_s = time.perf_counter() - t0
            log.info("search index at version %s: %d items in %.2fs (%s)", latest, snap.n, self.last_refresh_s,
                     snap.loaded)  # fmt: skip
            return True

    def _choose_sizes(self, snap: Snapshot, old: Snapshot | None) -> None:
        """Stage sizes for ``config.recall_target``: measured on a full load, or when the collection has grown or
        shrunk by a quarter since they were; else kept from ``old``."""
        if self.config.recall_target is None:
            return
        cal = old.loaded.get("calibration") if old is not None else None
        if cal and cal.get("items") and abs(snap.n - cal["items"]) <= cal["items"] // 4 and old is not None:
            snap.first_stage_k, snap.loaded["calibration"] = old.first_stage_k, cal
            return
        cal = calibrate(snap, self.config, exclude=NOT_VISUAL)
        cal["items"] = snap.n
        snap.first_stage_k = cal["first_stage_k"]
        snap.loaded["calibration"] = cal
        log.info("stage sizes for recall target %s: %s", self.config.recall_target, cal)

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

    def close(self) -> None:
        """Stop the token-stage threads (the index stays usable; they restart on demand)."""
        self._scorer.close()

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

    def _text(self, snap: Snapshot, query: str, k: int, filters: SearchFilters) -> list[tuple[Hit, float]]:
        out = []
        for r in bm25(snap.table, query, k, filters, HIT_COLUMNS, self.config.max_query_terms):
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

    def channel_depths(self, k: int) -> dict[str, int]:
        """How many hits each channel's list of a top-``k`` hybrid search holds (what a shard's part sends)."""
        depth = max(k, self.config.fusion_depth)
        return {"visual": max(self.config.exact_k, k), "bm25": depth, "dense": depth}

    def search_dense(self, query_vec: np.ndarray, k: int, *, filters: SearchFilters) -> list[Hit]:
        """Top ``k`` items by the dense text channel (best text window's cosine to the query vector)."""
        return self._one(SearchQuery("dense", None, "", k, filters, query_vec=query_vec))

    def _dense_rows(
        self, snap: Snapshot, qvec: np.ndarray | None, k: int, filters: SearchFilters
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
        # equal scores (e.g. items whose only window is the same title) in id order, not in write order: the rows tied
        # with the k-th all come back, so which of them make the cut is decided by id too (as a shard merge does)
        o = sorted(range(len(rows)), key=lambda i: (-float(scores[i]), snap.ids[int(rows[i])]))[:k]
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

    def search_many(self, queries: Sequence[SearchQuery]) -> list[list[Hit] | Rankings | SearchError]:
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
        fetched = snap.fetch_rows(wanted) if wanted and snap is not None else {}
        # the dense hits' text (snippets, prompts) for rows the visual take did not bring
        out: list[list[Hit] | Rankings | SearchError] = []
        for sq, plan in zip(queries, plans, strict=True):
            if isinstance(plan, SearchError):
                out.append(plan)
                continue
            try:
                out.append(self._finish(snap, sq, plan, fetched))
            except SearchError as e:
                out.append(e)
        return self._with_texts(snap, out)

    def _with_texts(self, snap: Snapshot | None, out: list[Any]) -> list[Any]:
        """Fill in the text of the returned hits that came only from the dense channel (one take for the batch):
        only the hits that survive fusion are fetched, not every candidate of every channel (a partial result's
        channel lists are all returned, so all of theirs)."""
        if snap is None:
            return out

        def lists(got: Any) -> list[list[Hit]]:
            return [got] if isinstance(got, list) else list(got.values()) if isinstance(got, dict) else []

        want = {
            snap.id_row[h.id]
            for got in out
            for hits in lists(got)
            for h in hits
            if not h.text and h.id in snap.id_row and (snap.has_text is None or snap.has_text[snap.id_row[h.id]])
        }
        if not want:
            return out
        texts = snap.fetch_texts(sorted(want))
        n = self.config.snippet_chars

        def filled(hits: list[Hit]) -> list[Hit]:
            return [
                dataclasses.replace(h, text=(texts.get(snap.id_row.get(h.id, -1)) or "")[:n]) if not h.text else h
                for h in hits
            ]

        return [
            filled(got) if isinstance(got, list) else {c: filled(h) for c, h in got.items()} if isinstance(got, dict)
            else got
            for got in out
        ]  # fmt: skip

    def _one(self, sq: SearchQuery) -> list[Hit]:
        got = self.search_many([sq])[0]
        if isinstance(got, SearchError):
            raise got
        assert isinstance(got, list)
        return got

    def _weights(self, snap: Snapshot | None, sq: SearchQuery) -> dict[str, float]:
        """The hybrid query's positive channel weights over the channels this snapshot can serve, summing to 1."""
        raw = self.config.weights if sq.weights is None else sq.weights
        for name, w in raw.items():
            if name not in ("visual", "bm25", "dense"):
                raise SearchError(f"unknown channel {name!r} in weights; use visual, bm25 or dense")
            if not isinstance(w, int | float) or math.isnan(w) or math.isinf(w) or w < 0:
                raise SearchError(f"the weight of {name!r} must be a finite number >= 0, got {w!r}")
        positive = {c: float(w) for c, w in raw.items() if w > 0}
        if not positive and not sq.partial:  # a shard's part may have none left that this replica can serve
            raise SearchError("at least one channel weight must be positive")
        if snap is None:
            return positive
        can = set(_channels(snap))  # of the snapshot this batch runs on, even if a refresh swapped it meanwhile
        usable = {c: w for c, w in positive.items() if c in can}
        if not usable and sq.partial:  # another shard may serve them; the merge decides (mmrag.store.shards)
            return {}
        if not usable:  # e.g. a store without a full-text index or text vectors: the visual ranking alone
            log.warning("hybrid search: none of %s is available in this store; visual ranking only", sorted(positive))
            return {"visual": 1.0}
        total = sum(usable.values())
        return {c: w / total for c, w in usable.items()}

    def _plan(self, snap: Snapshot | None, sq: SearchQuery) -> _Plan:
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
            cand, stage = self._scorer.candidates(snap, q, sq.k, sq.filters, sq.first_stage_k, sq.exact_k)
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
            plan.cand, plan.stage = self._scorer.candidates(snap, q, exact_k, sq.filters, sq.first_stage_k, exact_k)
        if "dense" in w:
            plan.dense_rows, plan.dense_scores = self._dense_rows(snap, sq.query_vec, depth, sq.filters)
        return plan

    def _finish(
        self,
        snap: Snapshot | None,
        sq: SearchQuery,
        plan: _Plan,
        fetched: dict[int, tuple[np.ndarray, str | None]],
        texts: dict[int, str | None] | None = None,
    ) -> list[Hit] | Rankings:
        if sq.mode == "text":
            return self.search_text(sq.query_text, sq.k, filters=sq.filters)
        if plan.empty or snap is None:
            return {} if sq.partial and sq.mode == "hybrid" else []
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
            rows, scores, stages, vtexts = self._scorer.exact(snap, plan.q, vdepth, plan.cand, plan.stage, fetched)
            visual = [
                snap.hit(r, s, st, t, self.config.snippet_chars)
                for r, s, st, t in zip(rows, scores, stages, vtexts, strict=True)
            ]
        if sq.mode == "visual":
            return visual
        rankings: dict[str, list[Hit]] = {"visual": visual, "dense": dense}
        if "bm25" in plan.weights:
            rankings["bm25"] = [h for h, _ in self._text(snap, sq.query_text, plan.depth, sq.filters)]
        if sq.partial:
            return {c: hits for c, hits in rankings.items() if c in plan.weights}
        method = sq.fusion or self.config.fusion
        return fuse(rankings, plan.weights, sq.k, method=method, rrf_k=sq.rrf_k or self.config.rrf_k)  # type: ignore[arg-type]

    # ---------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _check_query(query_mv: Any, snap: Snapshot | None) -> np.ndarray:
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
