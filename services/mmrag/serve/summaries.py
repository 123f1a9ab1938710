"""The gateway's video summary route: ``POST /v1/videos/{doc_id}/summary``.

A summary with timestamped chapters, made map-reduce style by the generator from the video's clips
(:mod:`mmrag.serve.summary`), as JSON or streamed (server-sent events, like ``/v1/answer``), and kept in the store
(:mod:`mmrag.store.summaries`) until the video changes. The document is looked up through the gateway's
:class:`~mmrag.store.scoped.ScopedStore`: one in a collection outside the caller's key is 404, as everywhere. A mixin
of the gateway class, so that the route shares its FastAPI app, principal, store, quotas and generator handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Body
from fastapi.responses import JSONResponse, StreamingResponse

from mmrag.auth import context
from mmrag.serve import answer as A
from mmrag.serve.api import api
from mmrag.serve.http_layer import ApiError
from mmrag.serve.schemas import ErrorResponse, SummaryRequest, SummaryResponse, error_json

DOC_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SUMMARY_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 502, 503)}


class SummaryRoutes:
    cfg: Any
    store: Any
    generator: Any
    quotas: Any
    metrics: Any
    _count: Any

    @api.post(
        "/v1/videos/{doc_id}/summary",
        response_model=SummaryResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **SUMMARY_ERRORS},
    )
    async def video_summary(self, doc_id: str, req: Annotated[SummaryRequest | None, Body()] = None) -> Any:
        """Summarise a video: chapters of consecutive clips with their times and cited clips, each summarised by the
        generator from the clips' text (and frames, for a vision-language generator), then the whole video from the
        chapters. Kept in the store until the video is re-ingested with other content or deleted (``refresh``
        makes it again). ``doc_id`` is the video's document id (``GET /v1/collections/{name}/documents``)."""
        t0 = time.perf_counter()
        req = req or SummaryRequest()
        try:
            out = await self._summary(doc_id, req, t0)
        except ApiError as e:
            self.metrics.request("summary", e.status)
            raise
        if not isinstance(out, StreamingResponse):
            self.metrics.request("summary", 200)
        return out

    async def _video(self, doc_id: str) -> dict[str, Any]:
        if not DOC_ID_RE.match(doc_id):
            raise ApiError(400, "invalid_request", "document ids are 32 lowercase hex characters", "doc_id")
        doc = await asyncio.to_thread(self.store.document, doc_id)
        if doc is None:
            raise ApiError(404, "not_found", f"no document {doc_id}")
        context.note(collection=doc["collection"])
        from mmrag.store.summaries import SUMMARY_KINDS

        if doc.get("kind") not in SUMMARY_KINDS:
            raise ApiError(
                422,
                "not_a_video",
                f"document {doc_id} is a {doc.get('kind') or 'file'} ({doc['source_uri'].rsplit('/', 1)[-1]}), not a "
                "video: summaries are made of a video's clips",
                "doc_id",
            )
        return doc

    def _summarizer(self) -> Any:
        from mmrag.serve.generator import is_vision_model
        from mmrag.serve.generator_client import generate
        from mmrag.serve.summary import Summarizer

        async def call(messages: list[dict[str, Any]], *, max_tokens: int, stream: bool) -> Any:
            return await generate(self.generator, messages, max_tokens=max_tokens, stream=stream)  # type: ignore[call-overload]

        try:
            return Summarizer(
                self.cfg,
                call,
                vision=is_vision_model(self.cfg),
                count_tokens=self._count,
                route_prefix=self.cfg.server.route_prefix,
            )
        except ValueError as e:
            raise ApiError(503, "misconfigured", str(e)) from e

    async def _summary(self, doc_id: str, req: SummaryRequest, t0: float) -> Any:
        from mmrag.serve.summary import cache_key

        if self.generator is None:
            raise ApiError(503, "no_generator", "this deployment serves search only (generator.engine: none)")
        doc = await self._video(doc_id)
        summarizer = self._summarizer()
        key = cache_key(self.cfg, doc["content_hash"], summarizer.vision)
        use_cache = self.cfg.summary.cache
        if use_cache and not req.refresh:
            hit = await asyncio.to_thread(self.store.cached_summary, doc, key)
            if hit is not None:
                ms = round((time.perf_counter() - t0) * 1e3, 1)
                hit.update(cached=True, usage={}, timings={"lookup": ms, "total": ms})
                return self._replay(hit) if req.stream else JSONResponse(hit)
        clips = await asyncio.to_thread(self.store.video_clips, doc, frames=summarizer.n_frames > 0)
        if not clips:
            raise ApiError(
                422, "no_clips", f"video {doc_id} has no readable clips to summarise (see its ingest errors)", "doc_id"
            )
        if not req.stream:
            from mmrag.serve.generator_client import GeneratorError

            try:
                result = await summarizer.result(doc, clips)
            except GeneratorError as e:
                status = e.status if 400 <= e.status < 500 else 502
                raise ApiError(status, "generator_error", f"the generator refused the request: {e.message}") from e
            await self._keep(doc, key, result, use_cache)
            return JSONResponse({**result, "cached": False})

        async def events() -> AsyncIterator[str]:
            done = failed = False
            try:
                async with contextlib.aclosing(summarizer.run(doc, clips)) as run:  # leaving stops the chapters
                    async for event, data in run:
                        if event == "done":
                            await self._keep(doc, key, data, use_cache)
                            data = {**data, "cached": False}
                        yield A.sse(data, event)
                done = True
                self.metrics.request("summary", 200)
            except Exception as e:
                from mmrag.serve.generator_client import GeneratorError

                failed = True
                self.metrics.request("summary", 502)
                msg = e.message if isinstance(e, GeneratorError) else "the summary failed while streaming"
                yield A.sse(error_json("generator_error", msg), "error")
            finally:
                if not done and not failed:  # the client left mid-stream
                    self.metrics.request("summary", 499)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _keep(self, doc: dict[str, Any], key: str, result: dict[str, Any], use_cache: bool) -> None:
        """Charge the tokens, record the metrics and store the summary (a failed write only costs the cache)."""
        tokens = int(result["usage"].get("completion_tokens") or 0)
        if tokens:
            self.quotas.charge(context.current(), tokens)
        self.metrics.stages("summary", result["timings"])
        self.metrics.generated("summary", tokens, [c["modality"] for ch in result["chapters"] for c in ch["citations"]])
        if use_cache:
            try:
                await asyncio.to_thread(self.store.save_summary, doc, key, result)
            except Exception:
                import logging

                logging.getLogger(__name__).exception("storing the summary of %s failed", doc["doc_id"])

    @staticmethod
    def _replay(hit: dict[str, Any]) -> StreamingResponse:
        """A stored summary as the same events a fresh one streams."""

        async def events() -> AsyncIterator[str]:
            for ch in hit["chapters"]:
                yield A.sse(ch, "chapter")
            yield A.sse({"text": hit["summary"]}, "token")
            yield A.sse(hit, "done")

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


__all__ = ["SummaryRoutes"]
