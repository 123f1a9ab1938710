"""HTTP request/response models of the mmrag API and its JSON error shape.

Errors are always ``{"error": {"code": ..., "message": ..., "field": ...}}`` with a stable ``code``;
they never echo the request body back (a 1 MiB query must not produce a 1 MiB error).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmrag.config import COLLECTION_PATTERN, SearchMode

ModalityName = Literal["page", "image", "clip"]


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchFiltersIn(_Req):
    """Typed filters (same names as :class:`mmrag.store.search.SearchFilters`); each becomes a quoted
    literal in a LanceDB expression, never raw SQL."""

    modalities: list[ModalityName] | None = Field(default=None, description="Only these modalities.")
    source_uris: list[str] | None = Field(
        default=None, max_length=1000, description="Only items from these source URIs (as ingested)."
    )
    doc_ids: list[str] | None = Field(default=None, max_length=1000, description="Only items of these documents.")
    page_min: int | None = Field(default=None, ge=1, description="Pages at or after this number.")
    page_max: int | None = Field(default=None, ge=1, description="Pages at or before this number.")
    time_min_s: float | None = Field(default=None, ge=0, description="Clips ending after this second.")
    time_max_s: float | None = Field(default=None, ge=0, description="Clips starting before this second.")

    @field_validator("source_uris", "doc_ids")
    @classmethod
    def _strings(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for s in v:
                if not s or len(s) > 4096:
                    raise ValueError("each value must be 1-4096 characters")
        return v

    @field_validator("time_min_s", "time_max_s")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class SearchRequest(_Req):
    """POST /v1/search."""

    query: str = Field(description="What to look for (natural language).")
    k: int = Field(default=10, ge=1, description="How many results to return (at most server.max_k).")
    collection: str | None = Field(
        default=None, pattern=COLLECTION_PATTERN, description="Collection to search (default: the store's default)."
    )
    mode: SearchMode | None = Field(default=None, description="visual, text or hybrid (default: retriever's).")
    filters: SearchFiltersIn | None = Field(default=None, description="Optional typed filters.")
    rerank: bool = Field(default=True, description="Re-score candidates with the reranker deployment.")


class SearchResult(BaseModel):
    """One ranked item."""

    id: str = Field(description="Item id (stable for one version of a document).")
    score: float = Field(description="Final score (higher is better; scale depends on the last stage).")
    modality: ModalityName = Field(description="page, image or clip.")
    source: str = Field(description="Source document URI as ingested.")
    page: int | None = Field(default=None, description="1-based page number for pages.")
    start_s: float | None = Field(default=None, description="Clip start, seconds.")
    end_s: float | None = Field(default=None, description="Clip end, seconds.")
    snippet: str = Field(default="", description="The start of the item's text (text layer or OCR).")
    image_url: str = Field(description="GET this for the page image / image / clip keyframe (JPEG).")
    thumbnail_url: str = Field(description="GET this for a small PNG thumbnail.")
    scores: dict[str, float] = Field(default_factory=dict, description="Per-stage scores (debugging).")


class SearchResponse(BaseModel):
    """Response of POST /v1/search."""

    results: list[SearchResult] = Field(description="Best first.")
    mode: SearchMode = Field(description="The mode actually used.")
    collection: str = Field(description="The collection searched.")
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Per-stage server time.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_request, not_found.")
    message: str = Field(description="What is wrong and how to fix it.")
    field: str | None = Field(default=None, description="The request field at fault, when there is one.")


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_json(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorBody(code=code, message=message, field=field)).model_dump()
