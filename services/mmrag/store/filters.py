"""Typed search filters: applied as numpy masks over the in-RAM metadata and as LanceDB expressions.

User values reach LanceDB only as typed ``lancedb.expr`` literals, never as SQL built from user text.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmrag.config import COLLECTION_PATTERN

Modality = Literal["page", "image", "clip", "audio"]

#: Longest list a filter may hold (doc ids / source URIs), and longest string in it.
MAX_FILTER_VALUES = 1000
MAX_FILTER_CHARS = 4096


class SearchFilters(BaseModel):
    """What a search may return: always one collection, optionally narrowed further.

    Every condition is applied twice in the same way: as numpy masks over the in-RAM metadata (visual
    search) and as a typed LanceDB expression (text search, where it is a prefilter). A page range keeps
    only items that have a page (PDF pages); a time range keeps only clips that overlap it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: str = Field(pattern=COLLECTION_PATTERN, description="The collection searched (exactly one).")
    modalities: list[Modality] | None = Field(
        default=None, min_length=1, description="Keep only these modalities; none means all."
    )
    doc_ids: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_FILTER_VALUES, description="Keep only these documents."
    )
    source_uris: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_FILTER_VALUES, description="Keep only these source files."
    )
    page_min: int | None = Field(default=None, ge=1, description="Smallest page number kept (1-based).")
    page_max: int | None = Field(default=None, ge=1, description="Largest page number kept (1-based).")
    time_min_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Clips must end at or after this time (seconds)."
    )
    time_max_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Clips must start at or before this time (seconds)."
    )

    @field_validator("doc_ids", "source_uris")
    @classmethod
    def _plain_strings(cls, values: list[str] | None) -> list[str] | None:
        for v in values or ():
            if not v or len(v) > MAX_FILTER_CHARS:
                raise ValueError(f"each value must be 1-{MAX_FILTER_CHARS} characters")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError("values must be valid Unicode text (no lone surrogates)") from e
        return values

    @model_validator(mode="after")
    def _check_ranges(self) -> SearchFilters:
        if self.page_min is not None and self.page_max is not None and self.page_min > self.page_max:
            raise ValueError(f"page_min ({self.page_min}) is larger than page_max ({self.page_max})")
        if self.time_min_s is not None and self.time_max_s is not None and self.time_min_s > self.time_max_s:
            raise ValueError(f"time_min_s ({self.time_min_s}) is larger than time_max_s ({self.time_max_s})")
        return self

    def to_expr(self) -> Any:
        """The filters as a typed LanceDB expression (visible rows only); every literal is quoted by LanceDB."""
        from lancedb.expr import col, lit

        e = (col("visible") == lit(True)) & (col("collection") == lit(self.collection))
        if self.modalities is not None:
            e = e & col("modality").isin(list(self.modalities))
        if self.doc_ids is not None:
            e = e & col("doc_id").isin(list(self.doc_ids))
        if self.source_uris is not None:
            e = e & col("source_uri").isin(list(self.source_uris))
        if self.page_min is not None:
            e = e & (col("page") >= lit(int(self.page_min)))
        if self.page_max is not None:
            e = e & (col("page") <= lit(int(self.page_max)))
        if self.time_min_s is not None:
            e = e & (col("end_s") >= lit(float(self.time_min_s)))
        if self.time_max_s is not None:
            e = e & (col("start_s") <= lit(float(self.time_max_s)))
        return e

    def to_sql(self) -> str:
        """SQL text of :meth:`to_expr`, for LanceDB's ``.where``."""
        return self.to_expr().to_sql()


__all__ = ["MAX_FILTER_CHARS", "MAX_FILTER_VALUES", "Modality", "SearchFilters"]
