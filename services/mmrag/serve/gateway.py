"""Gateway deployment: the HTTP ingress (FastAPI) that orchestrates retriever → reranker → generator.

``/v1/search`` ranks items; ``/v1/answer`` and the OpenAI-compatible ``/v1/chat/completions``
(:mod:`mmrag.serve.chat`) answer from them with citations (see :mod:`mmrag.serve.answer` for the response shapes);
``/v1/models`` lists the served model. The other routes are mixins of the gateway class, one module each: items and
their media (:mod:`mmrag.serve.items`), documents and uploads (:mod:`mmrag.serve.documents`), video summaries
(:mod:`mmrag.serve.summaries`) and the web page (:mod:`mmrag.serve.web`).

Below the routes: JSON errors and the body limit (:mod:`mmrag.serve.http_layer`), keys, scoping, admission and the
audit line (:mod:`mmrag.serve.access`), and the prompt sources' cache (:mod:`mmrag.serve.sources`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from ray import serve

from mmrag import __version__, constants
from mmrag.auth import context
from mmrag.config import MmragConfig
from mmrag.models.rerankers import exact_maxsim
from mmrag.serve import access
from mmrag.serve import answer as A
from mmrag.serve.api import ERRORS, GEN_ERRORS, SSE, api
from mmrag.serve.chat import ChatRoutes
from mmrag.serve.documents import DocumentRoutes
from mmrag.serve.http_layer import ApiError, set_query_image_limit
from mmrag.serve.items import ItemRoutes
from mmrag.serve.metrics import GatewayMetrics
from mmrag.serve.query_image import body_doc, parse_body
from mmrag.serve.schemas import (
    AnswerRequest,
    AnswerResponse,
    Citation,
    SearchRequest,
    SearchResponse,
    SearchResult,
    error_json,
)
from mmrag.serve.summaries import SummaryRoutes
from mmrag.serve.web import WebRoutes

#: Seconds the gateway's list of collections is used before it is refreshed (in the background).
COLLECTIONS_TTL_S = 5.0

log = logging.getLogger(__name__)


@serve.deployment(name=constants.GATEWAY_DEPLOYMENT)
@serve.ingress(api)
class Gateway(ChatRoutes, ItemRoutes, DocumentRoutes, SummaryRoutes, WebRoutes):
    def __init__(
        self,
        config: dict[str, Any],
        retriever: Any,
        reranker: Any,
        generator: Any = None,
        *,
        ingestor: Any = None,
        store: Any = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.cfg = MmragConfig.model_validate(config)
        # retriever.shards > 1: one handle per shard; searches fan out over them (mmrag.serve.shards), while query
        # encoding and evidence, which need no index, go to the first
        shards = list(retriever) if isinstance(retriever, list | tuple) else None
        self.retriever = shards[0] if shards else retriever
        self.reranker = reranker
        self.generator = generator
        self.ingestor = ingestor
        self._documents_setup()
        if store is None:
            from mmrag.store import LanceStore

            store = LanceStore.from_config(self.cfg.store)
        from mmrag.auth.guard import Authenticator
        from mmrag.store.scoped import ScopedStore

        # Every read of the store below goes through the request's principal (tenant isolation in one place).
        self.store = ScopedStore(store)
        srv = self.cfg.server
        from mmrag.serve.run import exposure_warning

        if (warning := exposure_warning(self.cfg)) is not None:
            log.warning(warning)
        import hashlib

        from mmrag.auth.quota import Quotas
        from mmrag.serve.admission import gates

        # One quota book per store (keys live in the store), shared by every gateway replica of the app.
        self.quotas = Quotas(f"mmrag-quota-{hashlib.sha256(str(self.cfg.store.uri).encode()).hexdigest()[:12]}")
        self.gates = gates(srv.admission)
        if srv.ingress == "haproxy":
            from mmrag.serve.proxy_limits import ProxyLimits

            # HAProxy refuses over the gates' limits itself (cheap); the gates keep measuring and adapting them
            self.proxy_limits = ProxyLimits.for_this_replica(self.gates)
            if self.proxy_limits is not None:
                self.proxy_limits.start()
        access.install(
            Authenticator.from_config(srv, store),
            audit=srv.audit_log,
            audit_queries=srv.audit_queries,
            quotas=self.quotas,
            gates=self.gates,
        )
        set_query_image_limit(srv.max_query_image_bytes)  # a question's image may take the body past 1 MiB
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        from mmrag.serve.retries import Retries

        self.retries = Retries(srv.retry_deadline_s, on_event=self.metrics.retry)
        self.shards = None
        if shards and len(shards) > 1:
            from mmrag.serve.shards import ShardedRetriever
            from mmrag.store.search_config import SearchIndexConfig

            self.shards = ShardedRetriever(
                shards, self.retries, default_mode=self.cfg.retriever.default_mode,
                default_weights=SearchIndexConfig().weights,
            )  # fmt: skip
        self._collections: tuple[float, set[str]] = (0.0, set())
        self._collections_refreshing = False
        self._rerank_info: dict[str, Any] | None = None
        self._calibrations: dict[str, dict[str, Any]] = {}
        # (item id, with image) -> {"text", "prepared_image"}; items are immutable (ids hash the content)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="prompt")
        from mmrag.serve.sources import PromptSources

        self.sources = PromptSources(self.cfg, self.store, self._pool)
        from mmrag.serve.prompt import prompt_counter

        # prompt budgets counted with the generator's own tokenizer (models.generator.prompt_tokens)
        self._count = prompt_counter(self.cfg) if generator is not None else None

    # ------------------------------------------------------------------------------ helpers
    async def _known_collections(self, want: str | None = None) -> set[str]:
        """Collection names, from a cache: a store query costs ~5-10 ms, too much for every request.

        A stale cache (over ``COLLECTIONS_TTL_S``) is refreshed in the background while requests use it; a name
        not in it (``want``) is looked up at once (in a thread: the event loop serves every other request and stream
        meanwhile), unless the cache was just refreshed, so a collection ingested a moment ago is found on the first
        request."""
        at, names = self._collections
        age = time.monotonic() - at
        if not at or (want is not None and want not in names and age > 1.0):
            return self.store.visible(await asyncio.to_thread(self._refresh_collections))
        if age > COLLECTIONS_TTL_S and not self._collections_refreshing:
            self._collections_refreshing = True
            self._pool.submit(self._refresh_collections)
        return self.store.visible(names)

    def _refresh_collections(self) -> set[str]:
        try:
            names = self.store.unscoped.collections()  # a process-wide cache, filtered per request
            try:
                self._calibrations = self.store.unscoped.calibrations()
            except Exception:  # a calibration being written or unreadable must not hide the collections
                log.exception("reading the collections' calibrations failed; keeping the previous ones")
            self._collections = (time.monotonic(), names)
            return names
        finally:
            self._collections_refreshing = False

    async def _check(self, req: SearchRequest) -> str:
        q = req.query.strip()
        if not q and req.image is None:
            raise ApiError(400, "invalid_request", "query must not be empty (or send an image to search by)", "query")
        if len(req.query) > self.cfg.server.max_query_chars:
            raise ApiError(
                400,
                "invalid_request",
                f"query is {len(req.query)} characters; the limit is {self.cfg.server.max_query_chars}",
                "query",
            )
        if req.k > self.cfg.server.max_k:
            raise ApiError(400, "invalid_request", f"k must be between 1 and {self.cfg.server.max_k}", "k")
        collection = req.collection or self.cfg.store.default_collection
        context.note(collection=collection, query=req.query)
        if req.filters is not None:
            from pydantic import ValidationError

            from mmrag.store.search import SearchFilters

            try:
                SearchFilters(collection=collection, **req.filters.model_dump(exclude_none=True))
            except ValidationError as e:
                msg = e.errors()[0]["msg"] if e.errors() else "invalid filters"
                raise ApiError(400, "invalid_request", f"filters: {msg}", "filters") from e
        if collection not in await self._known_collections(collection):
            raise ApiError(
                404, "collection_not_found", f"no collection named {collection!r}; ingest into it first", "collection"
            )
        return collection

    def _result(self, h: dict[str, Any]) -> SearchResult:
        prefix = self.cfg.server.route_prefix.rstrip("/")
        return SearchResult(
            id=h["id"],
            score=h["score"],
            modality=h["modality"],
            source=h["source_uri"],
            page=h.get("page"),
            start_s=h.get("start_s"),
            end_s=h.get("end_s"),
            snippet=(h.get("text") or "")[:300],
            image_url=f"{prefix}/v1/items/{h['id']}/image",
            thumbnail_url=f"{prefix}/v1/items/{h['id']}/thumbnail",
            scores={k: float(v) for k, v in (h.get("stage_scores") or {}).items()},
        )

    def _calibration(self, collection: str) -> dict[str, Any] | None:
        """The collection's calibration record, from the cache refreshed with the collection names."""
        return self._calibrations.get(collection)

    async def run_search(
        self, req: SearchRequest, notes: list[str] | None = None
    ) -> tuple[list[dict[str, Any]], str, str, dict[str, float], Any]:
        """retriever → reranker; returns (hits, mode, collection, timings in ms, the query multivector or None).

        Fusion weights and the reranker's weight follow :func:`mmrag.calibration.policy.resolve`: the request,
        then the config, then the collection's calibration. With an image (:mod:`mmrag.serve.query_image`) the
        visual channel's query is the image's multivector (after the text's, when there is text); what the client
        should know about that goes into ``notes``."""
        from mmrag.calibration.policy import resolve
        from mmrag.store.fusion import blend_rerank

        collection = await self._check(req)
        if self._rerank_info is None:
            self._rerank_info = await self.retries.call("reranker.info", lambda: self.reranker.info.remote())
        kind = self._rerank_info["kind"]
        pol = resolve(
            self.cfg,
            self._calibration(collection),
            weights=req.weights,
            method=req.fusion,
            rerank=req.rerank,
            rerank_weight=req.rerank_weight,
        )
        rw = pol.rerank_weight if kind != "none" else 0.0
        mode = req.mode or self.cfg.retriever.default_mode
        t0 = time.perf_counter()
        image_mv = None
        if req.image is not None:
            from mmrag.serve.query_image import image_query

            image_mv, mode, image_notes = await image_query(
                req, mode, pol.weights, self._calibration(collection), cfg=self.cfg, retries=self.retries,
                retriever=self.retriever,
            )  # fmt: skip
            if notes is not None:
                notes.extend(image_notes)
            if not req.query.strip():
                rw = 0.0  # nothing for a text reranker to read; visual mode ends in exact MaxSim already
        # Visual mode ends in exact MaxSim already: the maxsim reranker would re-derive the same order, so there is
        # no point in widening the candidate list for it.
        if mode == "visual" and kind == "maxsim":
            rw = 0.0
        n = max(req.k, self.cfg.reranker.candidates) if rw > 0 else req.k
        from mmrag.store.search import SearchError

        smode = mode if image_mv is not None else req.mode
        try:
            filters = req.filters.model_dump(exclude_none=True) if req.filters else None
            if self.shards is not None:
                out = await self.shards.search(
                    req.query, k=n, collection=collection, mode=smode, filters=filters, weights=pol.weights,
                    fusion=pol.method, rrf_k=self.cfg.retriever.rrf_k, query_mv=image_mv,
                )  # fmt: skip
            else:
                out = await self.retries.call(
                "retriever.search",
                    lambda: self.retriever.search.remote(
                        req.query, k=n, collection=collection, mode=smode, filters=filters, weights=pol.weights,
                        fusion=pol.method, query_mv=image_mv,
                    ),
                )  # fmt: skip
        except SearchError as e:  # a search this store cannot run as asked (e.g. dense mode without text vectors)
            raise ApiError(400, "invalid_request", str(e), "mode") from e
        timings = {"retrieve": (time.perf_counter() - t0) * 1e3, **out["timings"]}
        hits = out["hits"]
        if rw > 0 and hits:
            t0 = time.perf_counter()
            pool = hits[: self.cfg.reranker.candidates]
            if kind == "maxsim" and all(exact_maxsim(h) is not None for h in pool):
                # Every candidate already has its exact MaxSim from the retriever's last stage: the maxsim reranker
                # would compute the same numbers, so the round trip is skipped.
                scores = [exact_maxsim(h) for h in pool]
            else:
                qmv = out["query_mv"]
                if qmv is None and self._rerank_info["needs_query_vectors"]:
                    qmv = await self.retries.call("retriever.encode", lambda: self.retriever.encode.remote(req.query))
                scores = await self.retries.call(
                    "reranker.scores",
                    lambda: self.reranker.scores.remote(req.query, qmv, pool),
                )
            hits = blend_rerank(pool, scores, rw, len(pool), name=kind) + hits[len(pool) :]
            timings["rerank"] = (time.perf_counter() - t0) * 1e3
        return hits[: req.k], out["mode"], collection, timings, out.get("query_mv")

    async def _evidence(self, query: str, query_mv: Any, hits: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
        """id -> evidence of ``hits`` (the retriever holds the encoder whose token layout it needs), and its ms."""
        if not hits:
            return {}, 0.0
        t0 = time.perf_counter()
        slim = [{"id": h["id"], "text": (h.get("text") or "")[:300]} for h in hits]
        got, _ = await self.retries.call(
            "retriever.evidence", lambda: self.retriever.evidence.remote(query, query_mv, slim)
        )
        return got, (time.perf_counter() - t0) * 1e3

    def _build_prompt(
        self, query: str, hits: list[dict[str, Any]], max_tokens: int, history: list[dict[str, str]] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """(chat messages, how many hits made it in). Hits carry a snippet: the sources' whole text, and the
        prompt-ready images of the first ``max_images_per_prompt``, come from the cache or one store call."""
        from mmrag.serve.prompt import build_prompt_sources

        sources = self.sources.get(hits)
        contexts = [{**h, "image": None, **sources.get(h["id"], {})} for h in hits]
        try:
            return build_prompt_sources(
                query, contexts, self.cfg, max_tokens=max_tokens, count_tokens=self._count, history=history or ()
            )
        except ValueError as e:
            raise ApiError(400, "invalid_request", str(e), "max_tokens") from e

    def _max_tokens(self, asked: int | None) -> int:
        m = self.cfg.models.generator
        cap = self.cfg.generator.max_request_tokens or m.max_model_len // 2
        if asked is None:
            return min(m.max_tokens, cap)
        if asked > cap:
            why = (
                f"this deployment's model takes {m.max_model_len} tokens in all"
                if self.cfg.generator.max_request_tokens is None
                else "generator.max_request_tokens"
            )
            raise ApiError(
                400,
                "invalid_request",
                f"max_tokens is {asked}; at most {cap} may go to an answer ({why})",
                "max_tokens",
            )
        return asked

    async def prepare_answer(
        self,
        query: str,
        *,
        k: int | None,
        collection: str | None,
        mode: str | None,
        filters: Any,
        rerank: bool | None,
        max_tokens: int | None,
        rerank_weight: float | None = None,
        weights: dict[str, float] | None = None,
        fusion: str | None = None,
        history: list[dict[str, str]] | None = None,
        search_for: str | None = None,
        evidence: bool = False,
        image: str | None = None,
    ) -> dict[str, Any]:
        """Search, then the prompt: everything before the generator, with timings (ms) from ``t0``. An ``image``
        (base64 or data URL) is searched by (:mod:`mmrag.serve.query_image`) and shown to a vision-language
        generator with the question."""
        if self.generator is None:
            raise ApiError(
                503,
                "no_generator",
                "this deployment serves search only (generator.engine: none); use /v1/search, or deploy a generator",
            )
        t0 = time.perf_counter()
        max_tokens = self._max_tokens(max_tokens)
        if image is not None and not query.strip():
            query = A.IMAGE_QUESTION
            search_for = ""  # the image alone is searched; the stand-in question is no query
        sreq = SearchRequest(
            image=image,
            query=search_for if search_for is not None else query,
            k=k or self.cfg.generator.contexts,
            collection=collection,
            mode=mode,
            filters=filters,
            rerank=rerank,
            rerank_weight=rerank_weight,
            weights=weights,
            fusion=fusion,
        )
        notes: list[str] = []
        hits, mode, collection, st, qmv = await self.run_search(sreq, notes)
        t1 = time.perf_counter()
        shown = None
        if image is not None:  # a vision-language generator sees it: the sources leave room for it
            from mmrag.serve.query_image import generator_image, with_image

            shown = await asyncio.to_thread(generator_image, image, self.cfg, notes, self._count)
        reserve = max_tokens + (shown[1] if shown else 0)
        if self.sources.all_cached(hits):  # no store call, no image to resize: cheaper than a hop to a thread
            messages, n_used = self._build_prompt(query, hits, reserve, history)
        else:
            messages, n_used = await asyncio.to_thread(self._build_prompt, query, hits, reserve, history)
        if shown:
            messages = with_image(messages, shown[0])
        if image is not None and qmv is not None:
            qmv = None  # evidence regions are the words' matches: re-encode the text alone
        timings = {
            "retrieve": st["retrieve"],
            "rerank": st.get("rerank", 0.0),
            "prompt": (time.perf_counter() - t1) * 1e3,
        }
        ev_task = None
        if evidence and sreq.query.strip():  # beside the generator: the first token does not wait for it
            ev_task = asyncio.ensure_future(self._evidence(search_for or query, qmv, hits[:n_used]))
            # an answer that fails or is left mid-stream never awaits it: its error must not go unretrieved
            ev_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return {
            "t0": t0,
            "evidence": ev_task,
            "hits": hits,
            "n_used": n_used,
            "messages": messages,
            "mode": mode,
            "collection": collection,
            "max_tokens": max_tokens,
            "timings": timings,
            "notes": notes,
        }

    async def _generate(self, prep: dict[str, Any], *, stream: bool, temperature: float, extra: dict[str, Any]) -> Any:
        from mmrag.serve.generator_client import GeneratorError, generate

        try:
            return await generate(
                self.generator,
                prep["messages"],
                max_tokens=prep["max_tokens"],
                stream=stream,  # type: ignore[arg-type]
                temperature=temperature,
                extra_body=extra or None,
            )
        except GeneratorError as e:
            status = e.status if 400 <= e.status < 500 else 502
            raise ApiError(status, "generator_error", f"the generator refused the request: {e.message}") from e

    async def _finish(
        self, endpoint: str, prep: dict[str, Any], text: str, usage: Any, t_gen: float, t_first: float | None
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Citations (with their evidence when asked) and final timings of an answer; records the metrics."""
        now = time.perf_counter()
        ev: dict[str, Any] = {}
        if prep.get("evidence") is not None:
            try:
                ev, prep["timings"]["evidence"] = await prep["evidence"]
            except Exception:  # evidence is an extra: the answer and its citations stand without it
                log.exception("computing the citations' evidence failed")
        timings = dict(prep["timings"])
        if t_first is not None:
            timings["ttft"] = (t_first - prep["t0"]) * 1e3
        timings["generate"] = (now - t_gen) * 1e3
        timings["total"] = (now - prep["t0"]) * 1e3
        cites = A.citations(prep["hits"], prep["n_used"], text, self.cfg.server.route_prefix)
        if prep.get("evidence") is not None:
            for c in cites:
                c["evidence"] = ev.get(c["id"])
        # one shape for every path (JSON answer, SSE, chat): the response model's, evidence null when not asked
        cites = [Citation.model_validate(c).model_dump(mode="json") for c in cites]
        if usage and usage.completion_tokens:
            self.quotas.charge(context.current(), usage.completion_tokens)
        self.metrics.stages(endpoint, timings)
        self.metrics.generated(endpoint, usage.completion_tokens if usage else 0, [c["modality"] for c in cites])
        return cites, timings

    async def _counted(self, endpoint: str, coro: Any) -> Any:
        try:
            out = await coro
        except ApiError as e:
            self.metrics.request(endpoint, e.status)
            raise
        except Exception:
            self.metrics.request(endpoint, 500)
            raise
        if not isinstance(out, StreamingResponse):  # a stream is counted when it ends: failing mid-way is no 200
            self.metrics.request(endpoint, 200)
        return out

    # ------------------------------------------------------------------------------ routes
    @api.post("/v1/search", response_model=SearchResponse, responses=ERRORS, openapi_extra=body_doc(SearchRequest))
    async def search(self, request: Request) -> SearchResponse:
        """Rank pages, images and clips for a query (text, an image, or both): visual (late interaction), text (BM25),
        dense or hybrid. The body is JSON, or multipart/form-data with the image as a file part."""
        req = await parse_body(request, SearchRequest)
        notes: list[str] = []
        hits, mode, collection, timings, qmv = await self._counted("search", self.run_search(req, notes))
        self.metrics.stages("search", {"retrieve": timings["retrieve"], "rerank": timings.get("rerank")})
        results = [self._result(h) for h in hits]
        if req.evidence and req.query.strip():
            # regions are the query words' matches: an image's tokens have no words, so its search re-encodes the text
            ev, timings["evidence"] = await self._evidence(req.query, qmv if req.image is None else None, hits)
            for r in results:
                r.evidence = ev.get(r.id)
        elif req.evidence:
            notes.append("evidence regions are the query words' matches; an image alone has none")
        return SearchResponse(results=results, mode=mode, collection=collection, timings_ms=timings, notes=notes)

    @api.post(
        "/v1/answer",
        response_model=AnswerResponse,
        responses={200: SSE, **GEN_ERRORS},
        openapi_extra=body_doc(AnswerRequest),
    )
    async def answer(self, request: Request) -> Any:
        """Answer a question from the retrieved pages, images and clip frames, citing them as [n].

        With ``stream: true`` the response is server-sent events: ``token`` ({text}) as the answer is generated,
        then ``citations`` ({citations}), then ``done`` ({finish_reason, usage, timings}); ``error`` ({error})
        if the generator fails after the stream started. The question may carry an image (see /v1/search)."""
        req = await parse_body(request, AnswerRequest)
        return await self._counted("answer", self._answer(req))

    async def _answer(self, req: AnswerRequest) -> Any:
        prep = await self.prepare_answer(
            req.query,
            k=req.k,
            collection=req.collection,
            mode=req.mode,
            filters=req.filters,
            rerank=req.rerank,
            max_tokens=req.max_tokens,
            rerank_weight=req.rerank_weight,
            weights=req.weights,
            fusion=req.fusion,
            evidence=req.evidence,
            image=req.image,
        )
        model = self.cfg.models.generator.served_model_name
        t_gen = time.perf_counter()
        if not req.stream:
            gen = await self._generate(prep, stream=False, temperature=req.temperature, extra={})
            cites, timings = await self._finish("answer", prep, gen.text, gen.usage, t_gen, None)
            return AnswerResponse(
                answer=gen.text,
                citations=cites,
                model=model,
                finish_reason=gen.finish_reason,
                usage=vars(gen.usage),
                collection=prep["collection"],
                mode=prep["mode"],
                timings=timings,
                notes=prep["notes"],
            )
        stream = await self._generate(prep, stream=True, temperature=req.temperature, extra={})

        async def events() -> AsyncIterator[str]:
            parts: list[str] = []
            t_first: float | None = None
            done = failed = False
            try:
                async for delta in stream:
                    if t_first is None:
                        t_first = time.perf_counter()
                    parts.append(delta)
                    yield A.sse({"text": delta}, "token")
                text = "".join(parts)
                cites, timings = await self._finish("answer", prep, text, stream.usage, t_gen, t_first)
                yield A.sse({"citations": cites}, "citations")
                usage = vars(stream.usage) if stream.usage else None
                done_event = {"finish_reason": stream.finish_reason, "usage": usage, "timings": timings}
                yield A.sse({**done_event, "notes": prep["notes"]}, "done")
                done = True
                self.metrics.request("answer", 200)
            except Exception as e:
                from mmrag.serve.generator_client import GeneratorError

                failed = True
                self.metrics.request("answer", 502)
                msg = e.message if isinstance(e, GeneratorError) else "the answer failed while streaming"
                yield A.sse(error_json("generator_error", msg), "error")
            finally:
                if not done:
                    stream.cancel()
                    if prep["evidence"] is not None:
                        prep["evidence"].cancel()
                    if not failed:  # the client left mid-stream
                        self.metrics.request("answer", 499)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        """OpenAI-compatible list of the served model (empty when no generator is deployed)."""
        data = []
        if self.generator is not None:
            name = self.cfg.models.generator.served_model_name
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "mmrag", "root": name})
        return {"object": "list", "data": data}

    @api.get("/v1/collections")
    async def collections(self) -> dict[str, Any]:
        """Collections with searchable items, what they hold, and how each searches (its calibration)."""
        colls = (await asyncio.to_thread(self.store.stats))["collections"]  # the key's collections only
        try:
            cal = await asyncio.to_thread(self.store.calibrations)
        except Exception:  # an unreadable calibration must not hide the collections
            log.exception("reading the collections' calibrations failed")
            cal = {}
        for name, info in colls.items():
            info["calibration"] = cal.get(name)
        return {"collections": colls}

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness/readiness: the gateway answers and the store is reachable. Lists the collections the caller may
        read (with ``server.auth: required``, none without a key: this path needs none)."""
        return {"status": "ok", "version": __version__, "collections": sorted(await self._known_collections())}
