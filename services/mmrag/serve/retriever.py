"""Retriever deployment: query encoding under dynamic batching, then LanceDB-backed search.

The encoder and the search index are injected (``encoder=``, ``index=``) so a test can bind the
real deployment with small parts; by default they are built from the config.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve

from mmrag import constants
from mmrag.config import MmragConfig
from mmrag.serve.coalesce import Coalescer

#: Batches ``@serve.batch`` may hand over while a model call runs; the coalescer merges them into the next call, so
#: a model call still holds at most ``batch_max_size`` queries. (Ray Serve logs that max_batch_size x this exceeds
#: max_ongoing_requests: that bound assumes every batch runs as cut, which the coalescer changes.) With
#: ``batch_wait_timeout_s`` 0 each query is its own batch, and this many can queue for the next call.
MAX_CONCURRENT_BATCHES = 16


@dataclass(frozen=True)
class _SearchArgs:
    query: str
    k: int
    collection: str
    mode: str
    filters: dict[str, Any] | None
    weights: dict[str, float] | None = None
    fusion: str | None = None
    #: A shard's part of a sharded search (mmrag.serve.shards): the query's vectors come encoded, and hybrid returns
    #: each channel's list unfused.
    query_mv: Any = field(default=None, compare=False)
    query_vec: Any = field(default=None, compare=False)
    partial: bool = False

    def needs(self, channel: str) -> bool:
        """Whether this search runs ``channel`` (``visual`` or ``dense``), so its query vector is needed."""
        return self.mode == channel or (self.mode == "hybrid" and (self.weights or {}).get(channel, 0) > 0)


def _effective(a: _SearchArgs, can: set[str]) -> _SearchArgs:
    """A hybrid search's weights over the channels this replica can serve (visual alone if none), so that the query
    vectors encoded are the ones the search uses (as :class:`mmrag.search.LocalSearcher` does)."""
    import dataclasses

    w = {c: v for c, v in (a.weights or {}).items() if v > 0 and c in can}
    if not w and not a.partial:  # a shard's part leaves the fallback to the merge: another shard may serve them
        w = {"visual": 1.0}
    return dataclasses.replace(a, weights=w)


@serve.deployment(name=constants.RETRIEVER_DEPLOYMENT)
class Retriever:
    def __init__(
        self,
        config: dict[str, Any],
        *,
        shard: int | None = None,
        encoder: Any = None,
        index: Any = None,
        text_encoder: Any = None,
        store: Any = None,
    ) -> None:
        self.cfg = MmragConfig.model_validate(config)
        if encoder is None:
            from mmrag.models.encoder import ColPaliEncoder

            encoder = ColPaliEncoder.from_config(self.cfg.models, batch_size=self.cfg.retriever.batch_max_size)
        if store is None:
            from mmrag.store import LanceStore

            store = LanceStore.from_config(self.cfg.store)
        if index is None:
            from mmrag.store.search import SearchIndex

            # retriever.shards > 1: this deployment holds shard ``shard`` (mmrag.store.shards)
            index = SearchIndex.from_store(store, self.cfg.retriever.index_config(shard))
        if text_encoder is None and self.cfg.models.text is not None:
            from mmrag.models.text_encoder import TextEncoder

            text_encoder = TextEncoder.from_config(self.cfg.models.text)
        self.encoder = encoder
        from mmrag.config import TINY_PREFIX
        from mmrag.serve.evidence import TINY_NOTE, EvidenceFinder

        tiny = self.cfg.models.retriever.model.startswith(TINY_PREFIX)
        self.evidence_finder = EvidenceFinder(encoder, store, note=TINY_NOTE if tiny else None)
        self.text_encoder = text_encoder
        self.index = index
        from mmrag.serve.refresh import IndexRefresher

        self.refresher = IndexRefresher(index, self.cfg.retriever.refresh_interval_s).start()
        # tuned per profile, not Ray's defaults
        n = self.cfg.retriever.batch_max_size
        for batched in (self._encode, self._search_batch):
            batched.set_max_batch_size(n)
            batched.set_batch_wait_timeout_s(self.cfg.retriever.batch_wait_timeout_s)
        self._search_calls: Coalescer[_SearchArgs, dict[str, Any] | Exception] = Coalescer(self._run_batch, n)
        self._encoder_calls: Coalescer[str, np.ndarray] = Coalescer(self.encoder.embed_queries, n)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005, max_concurrent_batches=MAX_CONCURRENT_BATCHES)
    async def _encode(self, queries: list[str]) -> list[np.ndarray]:
        return await self._encoder_calls.run(queries)

    async def encode(self, query: str) -> np.ndarray:
        return await self._encode(query)

    async def encode_image(self, png: bytes) -> np.ndarray:
        """An image query's multivector: the image (checked and scaled by the gateway, mmrag.serve.query_image)
        embedded as ingestion embeds a page."""
        import asyncio
        import io

        from PIL import Image

        def run() -> np.ndarray:
            with Image.open(io.BytesIO(png)) as img:
                return self.encoder.embed_images([img.convert("RGB")])[0]

        return await asyncio.to_thread(run)

    async def encode_query(self, query: str, *, visual: bool, dense: bool) -> tuple[np.ndarray | None, Any]:
        """A sharded search's query vectors, encoded once here for every shard: the multivector (``visual``) and the
        text model's vector (``dense``; None without ``models.text``)."""
        import asyncio

        qmv = await self._encode(query) if visual else None
        qvec = None
        if dense and self.text_encoder is not None:
            qvec = (await asyncio.to_thread(self.text_encoder.embed_queries, [query]))[0]
        return qmv, qvec

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
        query_mv: np.ndarray | None = None,
        query_vec: np.ndarray | None = None,
        partial: bool = False,
    ) -> dict[str, Any]:
        """Ranked candidates as plain dicts, plus the query multivector for the reranker.

        ``partial`` (one shard's part of a sharded search, :mod:`mmrag.serve.shards`): the query's vectors come as
        ``query_mv`` / ``query_vec`` (encoded once for every shard), and a hybrid search answers ``rankings`` (each
        channel's list, unfused), ``depths`` and the ``channels`` this shard serves instead of ``hits``.

        Concurrent searches are batched whole (:meth:`_search_batch`): one encoder forward pass for the batch's
        queries, then one :meth:`~mmrag.store.search.SearchIndex.search_many` over the batch, which fetches every
        query's exact-stage multivectors from LanceDB in one take."""
        t0 = time.perf_counter()
        out = await self._search_batch(
            _SearchArgs(
                query, k, collection, mode or self.cfg.retriever.default_mode, filters, weights, fusion,
                query_mv=query_mv, query_vec=query_vec, partial=partial,
            )
        )  # fmt: skip
        if isinstance(out, Exception):
            raise out
        out["timings"] = {**out["timings"], "in_retriever_ms": (time.perf_counter() - t0) * 1e3}
        return out

    async def evidence(
        self, query: str, query_mv: np.ndarray | None, hits: list[dict[str, Any]]
    ) -> tuple[dict[str, dict[str, Any]], float]:
        """Evidence for ``hits`` (``{"id", "text"}``): regions where the query's tokens matched each page or clip frame,
        and the query's words in each snippet (:class:`mmrag.serve.evidence.EvidenceFinder`), with the milliseconds it
        took. ``query_mv`` is the search's query multivector; None encodes the query here."""
        import asyncio

        t0 = time.perf_counter()
        if query_mv is None:
            query_mv = await self._encode(query)
        got = await asyncio.to_thread(self.evidence_finder.find, query, query_mv, hits)
        return got, (time.perf_counter() - t0) * 1e3

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005, max_concurrent_batches=MAX_CONCURRENT_BATCHES)
    async def _search_batch(self, batch: list[_SearchArgs]) -> list[dict[str, Any] | Exception]:
        # Encoder and search run in a worker thread (the event loop keeps accepting requests), one call at a time;
        # batches cut while a call runs go into the next call together (see mmrag.serve.coalesce).
        return await self._search_calls.run(batch)

    def _run_batch(self, batch: list[_SearchArgs]) -> list[dict[str, Any] | Exception]:
        from pydantic import ValidationError

        from mmrag.store.search import SearchError, SearchFilters, SearchQuery

        rcfg = self.cfg.retriever
        t0 = time.perf_counter()
        can = set(self.index.channels())
        if self.text_encoder is None:
            can.discard("dense")
        batch = [a if a.mode != "hybrid" else _effective(a, can) for a in batch]
        # vectors a sharded search encoded once (mmrag.serve.shards) are used as given
        qmvs = {i: a.query_mv for i, a in enumerate(batch) if a.query_mv is not None}
        qvecs = {i: a.query_vec for i, a in enumerate(batch) if a.query_vec is not None}
        needs = [i for i, a in enumerate(batch) if a.needs("visual") and i not in qmvs]
        if needs:
            qmvs |= dict(zip(needs, self.encoder.embed_queries([batch[i].query for i in needs]), strict=True))
        needs_text = [i for i, a in enumerate(batch) if a.needs("dense") and i not in qvecs]
        needs_text = needs_text if self.text_encoder is not None else []
        if needs_text:
            got = self.text_encoder.embed_queries([batch[i].query for i in needs_text])
            qvecs |= dict(zip(needs_text, got, strict=True))
        t1 = time.perf_counter()
        queries: list[SearchQuery | None] = []
        errors: dict[int, Exception] = {}
        for i, a in enumerate(batch):
            try:
                flt = SearchFilters(collection=a.collection, **(a.filters or {}))
            except ValidationError as e:
                errors[i] = SearchError(f"filters: {e.errors()[0]['msg'] if e.errors() else e}")
                queries.append(None)
                continue
            queries.append(
                SearchQuery(
                    a.mode,
                    qmvs.get(i),
                    a.query,
                    a.k,
                    flt,
                    first_stage_k=max(a.k, rcfg.first_stage_k),
                    rrf_k=rcfg.rrf_k,
                    query_vec=qvecs.get(i),
                    weights=a.weights,
                    fusion=a.fusion,
                    partial=a.partial,
                )
            )
        valid = [i for i, q in enumerate(queries) if q is not None]
        found = dict(zip(valid, self.index.search_many([queries[i] for i in valid]), strict=True))
        t2 = time.perf_counter()
        timings = {"encode_ms": (t1 - t0) * 1e3, "search_ms": (t2 - t1) * 1e3, "batch": float(len(batch))}
        if not needs and not needs_text:
            del timings["encode_ms"]
        out: list[dict[str, Any] | Exception] = []
        for i, a in enumerate(batch):
            got = errors.get(i) or found[i]
            if isinstance(got, Exception):
                out.append(got)
                continue
            # a shard's part need not send back the vectors the gateway sent it
            res: dict[str, Any] = {"query_mv": None if a.partial else qmvs.get(i), "mode": a.mode, "timings": timings}
            if isinstance(got, dict):  # a shard's part of a hybrid search
                res["rankings"] = {c: [h.to_dict() for h in hits] for c, hits in got.items()}
                res["depths"] = self.index.channel_depths(a.k)
                res["channels"] = sorted(can)
            else:
                res["hits"] = [h.to_dict() for h in got]
            out.append(res)
        return out

    async def check_health(self) -> None:
        """Serve calls this periodically: unhealthy only if the index refresh loop died (the refresh itself runs
        in its own thread, :mod:`mmrag.serve.refresh`, never here)."""
        self.refresher.check()
