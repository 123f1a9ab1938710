"""The gateway's HTTP layer below the routes: JSON errors with stable codes, and the request body limit.

Every error is JSON ``{"error": {"code", "message", "field"}}`` (see :mod:`mmrag.serve.schemas`), never an echo of
the request: FastAPI's own 422 handler echoes input and crashes on NaN. :func:`install_error_handlers` puts the
handlers and :class:`BodyLimit` on an app (the gateway's, and the tests' small ones).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmrag.serve.schemas import error_json

MAX_BODY_BYTES = 1 << 20

log = logging.getLogger(__name__)


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

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        """Anything else is still the JSON error shape: 503 + Retry-After when a downstream deployment is
        saturated (Serve's max_queued_requests) or a replica died, else 500 (logged, never echoed)."""
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError

        if isinstance(e, BackPressureError):
            body = error_json("overloaded", "the server is at capacity for this kind of request; retry shortly")
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        if isinstance(e, RayActorError):
            body = error_json("unavailable", "a part of the server restarted while answering; retry")
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        log.error("unexpected error answering a request", exc_info=e)
        return JSONResponse(error_json("internal_error", "the server failed to answer; see its logs"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse(error_json(code, str(e.detail)), status_code=e.status_code)

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)


#: Uploads (``POST /v1/collections/{name}/documents``) may be larger: ``ingestor.max_upload_bytes``, set by the
#: gateway at start (:func:`set_upload_limit`).
UPLOAD_PATH = re.compile(r"/v1/collections/[^/]+/documents$")
_upload_limit = {"bytes": 256 * 1024**2}


def set_upload_limit(max_bytes: int) -> None:
    _upload_limit["bytes"] = max_bytes


#: Questions may carry an image (``server.max_query_image_bytes``, base64 in JSON: 4/3 of it, plus the rest of the
#: body), set by the gateway at start (:func:`set_query_image_limit`).
QUERY_PATH = re.compile(r"/v1/(search|answer|chat/completions)$")
_query_limit = {"bytes": 0}


def set_query_image_limit(max_image_bytes: int) -> None:
    _query_limit["bytes"] = max_image_bytes * 4 // 3 + 64 * 1024


class BodyLimit:
    """413 for a request body over ``max_bytes`` (``ingestor.max_upload_bytes`` for an upload); plain ASGI.

    A Content-Length over the limit (or not a number) is refused before anything is read. A body without one
    (``Transfer-Encoding: chunked``) is counted as it arrives: at the limit the client gets the 413, the app is told
    the client left, and whatever the app then sends is dropped, so no more than ``max_bytes`` is ever buffered.
    (Starlette's ``@app.middleware("http")`` would do, but it runs every response, streams included, through an
    extra task and memory channel: time added to each request and to every streamed token.)"""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    @staticmethod
    def _too_large(limit: int) -> JSONResponse:
        body = error_json("request_too_large", f"request bodies are limited to {limit} bytes here")
        return JSONResponse(body, status_code=413)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if scope.get("method") == "POST" and UPLOAD_PATH.search(scope.get("path", "")):
            limit = _upload_limit["bytes"]
        elif scope.get("method") == "POST" and QUERY_PATH.search(scope.get("path", "")):
            limit = max(limit, _query_limit["bytes"])
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await self._too_large(limit)(scope, receive, send)
                    return
                await self.app(scope, receive, send)  # the server delivers no more than it announced
                return
        state = {"received": 0, "rejected": False}

        async def counted() -> dict[str, Any]:
            if state["rejected"]:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body") or b"")
                if state["received"] > limit:
                    state["rejected"] = True
                    await self._too_large(limit)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return msg

        async def guarded(msg: dict[str, Any]) -> None:
            if not state["rejected"]:
                await send(msg)

        await self.app(scope, counted, guarded)


__all__ = [
    "MAX_BODY_BYTES",
    "ApiError",
    "BodyLimit",
    "install_error_handlers",
    "set_query_image_limit",
    "set_upload_limit",
]
