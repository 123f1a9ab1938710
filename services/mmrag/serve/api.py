"""The gateway's FastAPI app: one object that every route module decorates (the gateway's search and answer routes,
:mod:`mmrag.serve.documents`'s ingestion routes), with the JSON error handlers, the body limit and the access
middleware installed once."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from mmrag import __version__
from mmrag.serve import access
from mmrag.serve.http_layer import install_error_handlers

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
_openapi = api.openapi


def _with_body_models() -> dict[str, Any]:
    if api.openapi_schema is None:
        doc = _openapi()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in BODY_MODELS:
            got = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in got.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas[model.__name__] = got
        api.openapi_schema = doc
    return api.openapi_schema


api.openapi = _with_body_models  # type: ignore[method-assign]

__all__ = ["BODY_MODELS", "api"]
