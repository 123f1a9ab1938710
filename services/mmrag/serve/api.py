"""The gateway's FastAPI app: one object that every route module decorates (the gateway's search and answer routes,
:mod:`mmrag.serve.documents`'s ingestion routes), with the JSON error handlers, the body limit and the access
middleware installed once."""

from __future__ import annotations

import types
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from mmrag import __version__
from mmrag.serve import access
from mmrag.serve.http_layer import install_error_handlers
from mmrag.serve.schemas import ErrorResponse

api = FastAPI(
    title="mmrag",
    version=__version__,
    description="Multimodal RAG over PDFs, images and videos: search, answer with citations, add documents.",
)
install_error_handlers(api)
api.add_middleware(access.AccessControl)  # outermost: every request, 413s included, is authenticated and audited

#: Request models of routes that read their body themselves (JSON or multipart: mmrag.serve.query_image.parse_body);
#: FastAPI lists only the models its routes declare, so these are added to the schema's components.
BODY_MODELS: list[type[BaseModel]] = []
api.state.body_models = BODY_MODELS  # travels with the app when Serve ships it to a replica


def _with_body_models(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema of ``app`` plus :data:`BODY_MODELS`. Bound to the app object itself: Serve ships a copy of
    the app to each replica and turns its class-based routes there, so a function closing over this module's
    ``api`` would describe the replica's untouched import instead."""
    doc = app.openapi_schema or FastAPI.openapi(app)  # whoever asked first, FastAPI caches it on the app
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in getattr(app.state, "body_models", BODY_MODELS):
        if model.__name__ not in schemas:
            got = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in got.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas[model.__name__] = got
    app.openapi_schema = doc
    return doc


#: The error responses the routes document in OpenAPI: every route's, and a generating route's.
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 413)}
GEN_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 502: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}
#: A route's 200 that may be a server-sent event stream.
SSE: dict[str, Any] = {"content": {"text/event-stream": {}}}

api.openapi = types.MethodType(_with_body_models, api)  # type: ignore[method-assign]

__all__ = ["BODY_MODELS", "ERRORS", "GEN_ERRORS", "SSE", "api"]
