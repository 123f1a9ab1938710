"""The gateway's access middleware: authenticate every request once, scope it, and write its audit line.

A plain ASGI middleware (like :class:`mmrag.serve.gateway.BodyLimit`), so it wraps every route, including ones
added later, and adds no task or channel to streamed responses. For each HTTP request it

1. asks the replica's :class:`~mmrag.auth.guard.Authenticator` for the principal (401/503 as JSON otherwise;
   ``/healthz`` and the API docs need no key and then see no collection),
2. admits it or not: a search or generation beyond what the replica can serve within the SLO is 503 ``overloaded``
   at once (:mod:`mmrag.serve.admission`), a key over its quota is 429 ``rate_limited``
   (:mod:`mmrag.auth.quota`), both with ``Retry-After``,
3. sets :data:`mmrag.auth.context.PRINCIPAL` for the request, which the gateway's
   :class:`~mmrag.store.scoped.ScopedStore` reads on every store access,
4. logs one JSON line on the ``mmrag.audit`` logger when the response is done: time, key id, method, path,
   collection, status, latency in ms (and the query with ``server.audit_queries``); never the key.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from typing import Any

from fastapi.responses import JSONResponse

from mmrag.auth import context
from mmrag.auth.guard import Authenticator, AuthError
from mmrag.auth.quota import QuotaExceeded, Quotas
from mmrag.serve.admission import Gate
from mmrag.serve.schemas import error_json

#: Paths a request without a key may reach (it then sees no collection): health, the API docs and the web page.
PUBLIC_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/", "/ui/app.js",
                          "/ui/app.css"})  # fmt: skip
GENERATE_PATHS = frozenset({"/v1/answer", "/v1/chat/completions"})
#: Generating paths with a parameter (the tokens-per-minute quota applies): a video's summary.
GENERATE_PATTERN = re.compile(r"^/v1/videos/[^/]+/summary$")

audit_log = logging.getLogger("mmrag.audit")

_state: dict[str, Any] = {"auth": None, "audit": True, "queries": False, "quotas": None, "gates": {}}


def install(
    authenticator: Authenticator,
    *,
    audit: bool = True,
    audit_queries: bool = False,
    quotas: Quotas | None = None,
    gates: dict[str, Gate] | None = None,
) -> None:
    """Make these the ones this process's gateway uses (one gateway replica per process). ``gates``: path ->
    its group's :class:`Gate` (paths of one group share one)."""
    _state.update(auth=authenticator, audit=audit, queries=audit_queries, quotas=quotas, gates=gates or {})
    if audit and not audit_log.handlers:
        handler = logging.StreamHandler(sys.stderr)  # Ray writes a replica's stderr to its log file
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit_log.addHandler(handler)
        audit_log.setLevel(logging.INFO)
        audit_log.propagate = False


def _error(status: int, code: str, message: str, retry_after: int = 1) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="mmrag"'} if status == 401 else {"Retry-After": str(retry_after)}
    return JSONResponse(error_json(code, message), status_code=status, headers=headers)


@functools.lru_cache(maxsize=64)
def _overloaded_body(retry_after: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(
        error_json("overloaded", "the server is at capacity for this kind of request; retry shortly")
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    return body, headers


async def _overloaded(retry_after: int, send: Any) -> None:
    """The 503 of a refused request, prebuilt: under overload it is most of what a replica sends."""
    body, headers = _overloaded_body(retry_after)
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AccessControl:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        root = scope.get("root_path") or ""
        path = scope["path"]
        rel = path[len(root) :] if root and path.startswith(root) else path
        authorization = None
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        auth: Authenticator | None = _state["auth"]
        facts: dict[str, Any] = {"collection": None}
        result = {"status": 500}

        async def noted(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                result["status"] = msg["status"]
            await send(msg)

        key_id = None
        try:
            if auth is None:
                await _error(503, "starting", "the gateway is starting; try again shortly")(scope, receive, noted)
                return
            try:
                principal = await auth.authenticate(authorization, public=rel in PUBLIC_PATHS)
            except AuthError as e:
                await _error(e.status, e.code, e.message)(scope, receive, noted)
                return
            key_id = principal.key_id
            gate: Gate | None = _state["gates"].get(rel)
            if gate is not None and not gate.enter():
                await _overloaded(gate.retry_after_s(), noted)
                return
            served = False
            try:
                quotas: Quotas | None = _state["quotas"]
                if quotas is not None:
                    try:
                        await quotas.admit(
                            principal, generates=rel in GENERATE_PATHS or bool(GENERATE_PATTERN.match(rel))
                        )
                    except QuotaExceeded as e:
                        await _error(429, "rate_limited", str(e), e.retry_after())(scope, receive, noted)
                        return
                p_token = context.PRINCIPAL.set(principal)
                a_token = context.AUDIT.set(facts)
                served = True
                try:
                    await self.app(scope, receive, noted)
                finally:
                    context.PRINCIPAL.reset(p_token)
                    context.AUDIT.reset(a_token)
            finally:
                if gate is not None:
                    gate.leave(time.perf_counter() - t0, counted=served)
        finally:
            if _state["audit"]:
                line = {
                    "ts": round(time.time(), 3),
                    "key_id": key_id,
                    "method": scope.get("method"),
                    "path": rel,
                    "collection": facts.get("collection"),
                    "status": result["status"],
                    "latency_ms": round((time.perf_counter() - t0) * 1e3, 2),
                }
                if _state["queries"] and facts.get("query") is not None:
                    line["query"] = facts["query"]
                audit_log.info(json.dumps(line, ensure_ascii=True))


__all__ = ["PUBLIC_PATHS", "AccessControl", "audit_log", "install"]
