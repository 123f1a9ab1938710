"""In-process search: the retriever → reranker path without Ray Serve (``mmrag search``, ``mmrag eval``,
calibration).

Same parts as the Serve deployments (:class:`mmrag.serve.retriever.Retriever`,
:class:`mmrag.serve.reranker.Reranker`), run in one process for scripts and the CLI. Fusion weights and reranking
follow :func:`mmrag.calibration.policy.resolve` (request, then config, then the collection's calibration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmrag.config import MmragConfig
from mmrag.store import schema as S

MODES = ("visual", "text", "dense", "hybrid")


class LocalSearcher:
    def __init__(
        self,
        cfg: MmragConfig,
        *,
        encoder: Any = None,
        index: Any = None,
        reranker: Any = ...,
        text_encoder: Any = None,
        store: Any = None,
    ) -> None:
        from mmrag.store import LanceStore

        self.cfg = cfg
        self.store = store or LanceStore.from_config(cfg.store)
        if not self.store.has_items():
            raise ValueError(f"the store at {cfg.store.uri} is empty; run `mmrag ingest` first")
        if index is None:
            from mmrag.store.search import SearchIndex

            index = SearchIndex.from_store(self.store, cfg.retriever.index_config())
        self.index = index
        self._encoder = encoder
        self._text_encoder = text_encoder
        if reranker is ...:
            from mmrag.serve.reranker import build_reranker

            reranker = build_reranker(cfg)
        self.reranker = reranker
        self.calibrations: dict[str, dict[str, Any]] = self.store.calibrations()

    def refresh(self) -> None:
        """Pick up new rows and new calibrations."""
        self.index.refresh()
        self.calibrations = self.store.calibrations()

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from mmrag.models.encoder import ColPaliEncoder

            if self.cfg.models.uses_tiny():
                from mmrag.models.tiny import build_tiny

                build_tiny(self.cfg.models.tiny_dir)
            self._encoder = ColPaliEncoder.from_config(self.cfg.models)
        return self._encoder

    @property
    def text_encoder(self) -> Any:
        if self._text_encoder is None:
            if self.cfg.models.text is None:
                raise ValueError("the dense text channel needs a text model (models.text is null)")
            from mmrag.models.text_encoder import TextEncoder

            self._text_encoder = TextEncoder.from_config(self.cfg.models.text)
        return self._text_encoder

    def _collection(self, collection: str | None) -> str:
        collection = S.validate_collection(collection or self.cfg.store.default_collection)
        if collection not in self.store.collections():
            raise ValueError(f"no collection named {collection!r} in {self.cfg.store.uri}")
        return collection

    def fusion(self, collection: str, **request: Any) -> Any:
        """The fusion settings a search of ``collection`` uses (see :mod:`mmrag.calibration.policy`)."""
        from mmrag.calibration.policy import resolve

        return resolve(self.cfg, self.calibrations.get(collection), **request)

    def _vectors(self, queries: Sequence[str], visual: bool, dense: bool) -> tuple[list[Any], list[Any]]:
        qmvs: list[Any] = list(self.encoder.embed_queries(list(queries))) if visual else [None] * len(queries)
        qvecs: list[Any] = list(self.text_encoder.embed_queries(list(queries))) if dense else [None] * len(queries)
        return qmvs, qvecs

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        collection: str | None = None,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
        rerank: bool | None = None,
        weights: dict[str, float] | None = None,
        fusion: str | None = None,
        rerank_weight: float | None = None,
    ) -> list[dict[str, Any]]:
        """Ranked hits as dicts. ``rerank`` None: the collection's calibrated reranking (skipped when it did not
        help); False: never; True: the reranking stage at its configured or calibrated weight (``rerank_weight``
        overrides it, 1 = the reranker's order alone)."""
        from mmrag.store.fusion import blend_rerank
        from mmrag.store.search import SearchFilters

        if not query.strip():
            raise ValueError("the query is empty")
        collection = self._collection(collection)
        mode = mode or self.cfg.retriever.default_mode
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use {', '.join(MODES)}")
        flt = SearchFilters(collection=collection, **(filters or {}))
        pol = self.fusion(collection, weights=weights, method=fusion, rerank=rerank, rerank_weight=rerank_weight)
        w = {c: v for c, v in pol.weights.items() if v > 0 and c in self.index.channels()} or {"visual": 1.0}
        rw = pol.rerank_weight if self.reranker is not None else 0.0
        n = max(k, self.cfg.reranker.candidates) if rw > 0 else k
        visual = mode == "visual" or (mode == "hybrid" and "visual" in w)
        dense = mode == "dense" or (mode == "hybrid" and "dense" in w)
        qmvs, qvecs = self._vectors([query], visual, dense)
        hits = self.index.search(
            mode,
            qmvs[0],
            query,
            n,
            filters=flt,
            first_stage_k=max(n, self.cfg.retriever.first_stage_k),
            rrf_k=self.cfg.retriever.rrf_k,
            query_vec=qvecs[0],
            weights=w,
            fusion=pol.method,
        )
        out = [h.to_dict() for h in hits]
        if rw > 0 and out:
            qmv = qmvs[0]
            if qmv is None and self.reranker.needs_query_vectors:
                qmv = self.encoder.embed_queries([query])[0]
            pool = out[: self.cfg.reranker.candidates]
            scores = [float(x) if np.isfinite(x) else -1e30 for x in self.reranker.score(query, qmv, pool)]
            name = getattr(self.reranker, "name", "rerank")
            out = blend_rerank(pool, scores, rw, len(pool), name=name) + out[len(pool) :]
        return out[:k]

    def channel_rankings(
        self, queries: Sequence[str], *, collection: str, depth: int = 50, channels: Sequence[str] | None = None
    ) -> list[dict[str, list[dict[str, Any]]]]:
        """Per query, each channel's own top ``depth`` hits (as dicts), for calibration and evaluation."""
        from mmrag.store.search import SearchError, SearchFilters, SearchQuery

        have = self.index.channels()
        chans = [c for c in (channels or have) if c in have]
        qmvs, qvecs = self._vectors(queries, "visual" in chans, "dense" in chans)
        flt = SearchFilters(collection=collection)
        mode_of = {"visual": "visual", "bm25": "text", "dense": "dense"}
        sq = [
            SearchQuery(
                mode_of[c],
                qmvs[i],
                q,
                depth,
                flt,
                first_stage_k=max(depth, self.cfg.retriever.first_stage_k),
                query_vec=qvecs[i],
            )
            for i, q in enumerate(queries)
            for c in chans
        ]
        got = self.index.search_many(sq)
        out: list[dict[str, list[dict[str, Any]]]] = []
        for i in range(len(queries)):
            per: dict[str, list[dict[str, Any]]] = {}
            for j, c in enumerate(chans):
                res = got[i * len(chans) + j]
                if isinstance(res, SearchError):
                    raise res
                per[c] = [h.to_dict() for h in res]
            out.append(per)
        return out

    def query_vectors(self, query: str) -> np.ndarray | None:
        """The visual query multivector (for rerankers that need it)."""
        return self.encoder.embed_queries([query])[0]
