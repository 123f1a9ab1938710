"""Gateway deployment: the HTTP ingress (FastAPI) that orchestrates retriever → reranker.

Every error is JSON ``{"error": {"code", "message", "field"}}`` (see :mod:`mmrag.serve.schemas`),
never an echo of the request: FastAPI's own 422 handler echoes input and crashes on NaN.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmrag import __version__, constants
from mmrag.config import MmragConfig
from mmrag.serve.schemas import (
    ErrorResponse,
    SearchRequest,
    SearchResponse,
    SearchResult,
    error_json,
)

ITEM_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_BODY_BYTES = 1 << 20
ERRORS = {400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 413: {"model": ErrorResponse}}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _field(loc: tuple[Any, ...]) -> str | None:
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    parts = [str(x) for x in loc]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(error_json(e.code, e.message, e.field), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_json("invalid_json", "the request body is not valid JSON"), status_code=400)
        field = _field(tuple(first.get("loc", ())))
        msg = str(first.get("msg", "invalid value"))
        if first.get("type") == "extra_forbidden":
            msg = "unknown field; see the OpenAPI schema at /openapi.json"
        more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
        return JSONResponse(error_json("invalid_request", f"{field or 'body'}: {msg}{more}", field), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse(error_json(code, str(e.detail)), status_code=e.status_code)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse(
                error_json("request_too_large", f"request bodies are limited to {MAX_BODY_BYTES} bytes"),
                status_code=413,
            )
        return await call_next(request)


api = FastAPI(
    title="mmrag",
    version=__version__,
    description="Multimodal RAG over PDFs, images and videos: search, answer with citations.",
)
install_error_handlers(api)


@serve.deployment(name=constants.GATEWAY_DEPLOYMENT)
@serve.ingress(api)
class Gateway:
    def __init__(self, config: dict[str, Any], retriever: Any, reranker: Any, *, store: Any = None) -> None:
        self.cfg = MmragConfig.model_validate(config)
        self.retriever = retriever
        self.reranker = reranker
        if store is None:
            from mmrag.store import LanceStore

            store = LanceStore.from_config(self.cfg.store)
        self.store = store
        self._collections: tuple[float, set[str]] = (0.0, set())
        self._rerank_info: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------ helpers
    def _known_collections(self) -> set[str]:
        at, names = self._collections
        if time.monotonic() - at > 5:
            names = self.store.collections()
            self._collections = (time.monotonic(), names)
        return names

    def _check(self, req: SearchRequest) -> str:
        q = req.query.strip()
        if not q:
            raise ApiError(400, "invalid_request", "query must not be empty", "query")
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
        if req.filters is not None:
            from pydantic import ValidationError

            from mmrag.store.search import SearchFilters

            try:
                SearchFilters(collection=collection, **req.filters.model_dump(exclude_none=True))
            except ValidationError as e:
                msg = e.errors()[0]["msg"] if e.errors() else "invalid filters"
                raise ApiError(400, "invalid_request", f"filters: {msg}", "filters") from e
        if collection not in self._known_collections():
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

    async def run_search(self, req: SearchRequest) -> tuple[list[dict[str, Any]], str, str, dict[str, float]]:
        """retriever → reranker; returns (hits, mode, collection, timings in ms)."""
        collection = self._check(req)
        if self._rerank_info is None:
            self._rerank_info = await self.reranker.info.remote()
        rerank = req.rerank and self._rerank_info["kind"] != "none"
        n = max(req.k, self.cfg.reranker.candidates) if rerank else req.k
        t0 = time.perf_counter()
        out = await self.retriever.search.remote(
            req.query,
            k=n,
            collection=collection,
            mode=req.mode,
            filters=req.filters.model_dump(exclude_none=True) if req.filters else None,
        )
        timings = {"retrieve": (time.perf_counter() - t0) * 1e3, **out["timings"]}
        hits = out["hits"]
        if rerank:
            qmv = out["query_mv"]
            if qmv is None and self._rerank_info["needs_query_vectors"]:
                qmv = await self.retriever.encode.remote(req.query)
            t0 = time.perf_counter()
            hits = await self.reranker.rerank.remote(req.query, qmv, hits, req.k)
            timings["rerank"] = (time.perf_counter() - t0) * 1e3
        return hits[: req.k], out["mode"], collection, timings

    # ------------------------------------------------------------------------------ routes
    @api.post("/v1/search", response_model=SearchResponse, responses=ERRORS)
    async def search(self, req: SearchRequest) -> SearchResponse:
        """Rank pages, images and clips for a query: visual (late interaction), text (BM25) or hybrid."""
        hits, mode, collection, timings = await self.run_search(req)
        return SearchResponse(
            results=[self._result(h) for h in hits], mode=mode, collection=collection, timings_ms=timings
        )

    @api.get("/v1/items/{item_id}/image", responses={200: {"content": {"image/jpeg": {}}}, **ERRORS})
    async def item_image(self, item_id: str) -> Response:
        """The page image, the image, or the clip keyframe (JPEG)."""
        return self._item_bytes(item_id, "image", "image/jpeg")

    @api.get("/v1/items/{item_id}/thumbnail", responses={200: {"content": {"image/png": {}}}, **ERRORS})
    async def item_thumbnail(self, item_id: str) -> Response:
        """A small PNG thumbnail of the item."""
        return self._item_bytes(item_id, "thumbnail", "image/png")

    def _item_bytes(self, item_id: str, column: str, media_type: str) -> Response:
        if not ITEM_ID_RE.match(item_id):
            raise ApiError(400, "invalid_request", "item ids are 32 lowercase hex characters", "item_id")
        row = self.store.get_item(item_id, [column])
        if row is None or not row.get(column):
            raise ApiError(404, "not_found", f"no item {item_id}")
        return Response(content=row[column], media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    @api.get("/v1/collections")
    async def collections(self) -> dict[str, Any]:
        """Collections with searchable items, and what they hold."""
        return {"collections": self.store.stats()["collections"]}

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness/readiness: the gateway answers and the store is reachable."""
        return {"status": "ok", "version": __version__, "collections": sorted(self._known_collections())}
