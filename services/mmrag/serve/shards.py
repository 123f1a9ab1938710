"""The gateway's side of a sharded index (``retriever.shards`` > 1): encode once, search every shard at once, merge.

Each shard is a retriever deployment of its own (``Retriever-shard-<i>``, :func:`mmrag.constants.retriever_deployment`)
with its own replicas and autoscaling. A search:

1. encodes the query once, on one shard (taken in turn), into the vectors its channels need (the multivector for the
   visual channel, the text model's vector for the dense one): each shard encoding it again would cost the encoder
   ``shards`` times per query, and on a GPU profile the encoder is most of a search's work;
2. sends them to every shard concurrently (each call with the gateway's retry-once on a failed replica);
3. merges the shards' parts into what one index gives (:mod:`mmrag.store.shards`).

Query encoding for the reranker and evidence regions need no index: they go to one shard.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

from mmrag.serve.retries import Retries
from mmrag.store.shards import merge_hybrid, top


class ShardedRetriever:
    """Fans a search out over the shards' handles and merges their parts; ``search`` answers as
    :meth:`mmrag.serve.retriever.Retriever.search` does (``hits``, ``query_mv``, ``mode``, ``timings``)."""

    def __init__(
        self, handles: Sequence[Any], retries: Retries, *, default_mode: str, default_weights: dict[str, float]
    ) -> None:
        self.handles = list(handles)
        self.retries = retries
        self.default_mode = default_mode
        self.default_weights = default_weights
        self._turn = itertools.cycle(range(len(self.handles)))

    def any(self) -> Any:
        """One shard's handle, taken in turn (encoding spreads over the shards)."""
        return self.handles[next(self._turn)]

    async def search(
        self,
        query: str,
        *,
        k: int,
        collection: str,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
        weights: dict[str, float] | None = None,
        fusion: str | None = None,
        rrf_k: int = 60,
        fusion_default: str = "rrf",
        query_mv: Any = None,
    ) -> dict[str, Any]:
        mode = mode or self.default_mode
        raw = dict(weights) if weights is not None else dict(self.default_weights)
        t0 = time.perf_counter()
        visual = mode == "visual" or (mode == "hybrid" and raw.get("visual", 0) > 0)
        dense = mode == "dense" or (mode == "hybrid" and raw.get("dense", 0) > 0)
        qmv, qvec = await self._encode(query, visual and query_mv is None, dense)
        if query_mv is not None:  # the query's multivector came with it (an image query: mmrag.serve.query_image)
            qmv = query_mv
        t1 = time.perf_counter()
        args = {"k": k, "collection": collection, "filters": filters, "weights": raw, "fusion": fusion}
        parts = await self._fan_out(query, mode, args, qmv, qvec)
        t2 = time.perf_counter()
        if mode == "hybrid":
            hits = merge_hybrid(parts, raw, k, method=fusion or fusion_default, rrf_k=rrf_k)
            if hits is None:  # no shard serves a weighted channel: the visual ranking alone, as one index does
                if qmv is None:
                    qmv, _ = await self._encode(query, True, False)
                parts = await self._fan_out(query, "visual", args, qmv, None)
                hits = top([p["hits"] for p in parts], k)
        else:
            hits = top([p["hits"] for p in parts], k)
        t3 = time.perf_counter()
        timings = {
            "encode_ms": (t1 - t0) * 1e3,
            "search_ms": (t2 - t1) * 1e3,
            "slowest_shard_ms": max(p["timings"].get("in_retriever_ms", 0.0) for p in parts),
            "merge_ms": (t3 - t2) * 1e3,
            "shards": float(len(self.handles)),
        }
        return {"hits": [h.to_dict() for h in hits], "query_mv": qmv, "mode": mode, "timings": timings}

    async def _encode(self, query: str, visual: bool, dense: bool) -> tuple[Any, Any]:
        if not (visual or dense):
            return None, None
        h = self.any()
        return await self.retries.call(
            "retriever.encode_query", lambda: h.encode_query.remote(query, visual=visual, dense=dense)
        )

    async def _fan_out(self, query: str, mode: str, args: dict[str, Any], qmv: Any, qvec: Any) -> list[dict[str, Any]]:
        def one(h: Any) -> Any:
            return self.retries.call(
                "retriever.search",
                lambda: h.search.remote(query, mode=mode, query_mv=qmv, query_vec=qvec, partial=True, **args),
            )

        return list(await asyncio.gather(*(one(h) for h in self.handles)))


__all__ = ["ShardedRetriever"]
