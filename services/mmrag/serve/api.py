"""The gateway's FastAPI app: one object that every route module decorates (the gateway's search and answer routes,
:mod:`mmrag.serve.documents`'s ingestion routes), with the JSON error handlers, the body limit and the access
middleware installed once."""

from __future__ import annotations

from fastapi import FastAPI

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

__all__ = ["api"]
