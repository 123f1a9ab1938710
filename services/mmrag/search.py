"""In-process search: the retriever → reranker path without Ray Serve (``mmrag search``).

Same parts as the Serve deployments (:class:`mmrag.serve.retriever.Retriever`,
:class:`mmrag.serve.reranker.Reranker`), run in one process for scripts and the CLI.
"""

from __future__ import annotations

from typing import Any

from mmrag.config import MmragConfig
from mmrag.store import schema as S


class LocalSearcher:
    def __init__(self, cfg: MmragConfig, *, encoder: Any = None, index: Any = None, reranker: Any = ...) -> None:
        from mmrag.store import LanceStore

        self.cfg = cfg
        self.store = LanceStore.from_config(cfg.store)
        if not self.store.has_items():
            raise ValueError(f"the store at {cfg.store.uri} is empty; run `mmrag ingest` first")
        if index is None:
            from mmrag.store.search import SearchIndex

            index = SearchIndex.from_store(self.store, {"first_stage_k": cfg.retriever.first_stage_k})
        self.index = index
        self._encoder = encoder
        if reranker is ...:
            from mmrag.serve.reranker import build_reranker

            reranker = build_reranker(cfg)
        self.reranker = reranker

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from mmrag.models.encoder import ColPaliEncoder

            if self.cfg.models.uses_tiny():
                from mmrag.models.tiny import build_tiny

                build_tiny(self.cfg.models.tiny_dir)
            self._encoder = ColPaliEncoder.from_config(self.cfg.models)
        return self._encoder

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        collection: str | None = None,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
        rerank: bool = True,
    ) -> list[dict[str, Any]]:
        from mmrag.store.search import SearchFilters

        if not query.strip():
            raise ValueError("the query is empty")
        collection = S.validate_collection(collection or self.cfg.store.default_collection)
        if collection not in self.store.collections():
            raise ValueError(f"no collection named {collection!r} in {self.cfg.store.uri}")
        mode = mode or self.cfg.retriever.default_mode
        flt = SearchFilters(collection=collection, **(filters or {}))
        rerank = rerank and self.reranker is not None
        n = max(k, self.cfg.reranker.candidates) if rerank else k
        qmv = self.encoder.embed_queries([query])[0] if mode != "text" else None
        hits = self.index.search(
            mode,
            qmv,
            query,
            n,
            filters=flt,
            first_stage_k=max(n, self.cfg.retriever.first_stage_k),
            rrf_k=self.cfg.retriever.rrf_k,
            text_weight=self.cfg.retriever.text_weight,
        )
        out = [h.to_dict() for h in hits]
        if rerank and out:
            if qmv is None and self.reranker.needs_query_vectors:
                qmv = self.encoder.embed_queries([query])[0]
            scores = self.reranker.score(query, qmv, out)
            for h, s in zip(out, scores, strict=True):
                h.setdefault("stage_scores", {})[getattr(self.reranker, "name", "rerank")] = float(s)
                h["score"] = float(s)
            out.sort(key=lambda h: h["score"], reverse=True)
        return out[:k]
