"""Retriever deployment: query encoding under dynamic batching, then LanceDB-backed search.

The encoder and the search index are injected (``encoder=``, ``index=``) so a test can bind the
real deployment with small parts; by default they are built from the config.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from mmrag import constants
from mmrag.config import MmragConfig


@serve.deployment(name=constants.RETRIEVER_DEPLOYMENT)
class Retriever:
    def __init__(self, config: dict[str, Any], *, encoder: Any = None, index: Any = None) -> None:
        self.cfg = MmragConfig.model_validate(config)
        if encoder is None:
            from mmrag.models.encoder import ColPaliEncoder

            encoder = ColPaliEncoder.from_config(self.cfg.models, batch_size=self.cfg.retriever.batch_max_size)
        if index is None:
            from mmrag.store import LanceStore
            from mmrag.store.search import SearchIndex

            index = SearchIndex.from_store(
                LanceStore.from_config(self.cfg.store), {"first_stage_k": self.cfg.retriever.first_stage_k}
            )
        self.encoder = encoder
        self.index = index
        # tuned per profile, not Ray's defaults
        self._encode.set_max_batch_size(self.cfg.retriever.batch_max_size)
        self._encode.set_batch_wait_timeout_s(self.cfg.retriever.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode(self, queries: list[str]) -> list[np.ndarray]:
        # the forward pass runs in a thread so the replica keeps accepting (and batching) requests
        return await asyncio.to_thread(self.encoder.embed_queries, queries)

    async def encode(self, query: str) -> np.ndarray:
        return await self._encode(query)

    async def search(
        self,
        query: str,
        *,
        k: int,
        collection: str,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Ranked candidates as plain dicts, plus the query multivector for the reranker."""
        from mmrag.store.search import SearchFilters

        mode = mode or self.cfg.retriever.default_mode
        flt = SearchFilters(collection=collection, **(filters or {}))
        timings: dict[str, float] = {}
        qmv = None
        if mode in ("visual", "hybrid"):
            t0 = time.perf_counter()
            qmv = await self._encode(query)
            timings["encode_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        hits = await asyncio.to_thread(
            self.index.search,
            mode,
            qmv,
            query,
            k,
            filters=flt,
            first_stage_k=max(k, self.cfg.retriever.first_stage_k),
            rrf_k=self.cfg.retriever.rrf_k,
            text_weight=self.cfg.retriever.text_weight,
        )
        timings["search_ms"] = (time.perf_counter() - t0) * 1e3
        return {"hits": [h.to_dict() for h in hits], "query_mv": qmv, "mode": mode, "timings": timings}

    async def check_health(self) -> None:
        """Serve calls this periodically; a failing index refresh marks the replica unhealthy."""
        await asyncio.to_thread(self.index.refresh)
